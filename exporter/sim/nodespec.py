"""The sim node's spec: the JSON file that says what one node serves, parsed and validated.

A node (exporter.sim.node) serves what its spec lists:

    {"control_socket": "/run/lab/edge.sock",       # control API (UNIX socket, JSON)
     "ca_dir": "/run/lab/ca",                      # shared lab CA (lab-ca.pem is the bundle)
     "dns": [{"listen": ["10.129.30.12:53"], "zones": {"facebook.com": {"@": [["NS", 172800,
              "a.ns.facebook.com."]]}}}],          # authoritative, UDP+TCP
     "recursors": [{"listen": ["10.1.1.53:53"], "stubs": {"facebook.com": ["10.129.30.12:53"]},
                    "upstream_timeout": 0.5}],
     "https": [{"listen": ["10.157.240.35:443"], "hostnames": ["*.facebook.com"],
                "http3": true}],                   # + HTTP/3 on UDP, same address and port
     "tcp": [{"listen": ["10.31.13.50:5222"], "name": "whatsapp-chat",
              "max_connections": 256, "hold_seconds": 30}]}

Every listen entry binds exactly that address:port (port 0 = any free port; /status tells
which). Relative paths are taken relative to the spec file. A bad spec raises SpecError, whose
message starts with the path of the bad field.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from exporter.sim.dnsserver import Zone

__all__ = [
    "DnsSpec",
    "HttpsSpec",
    "ListenAddr",
    "NodeSpec",
    "RecursorSpec",
    "SpecError",
    "TcpSpec",
]

# sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH = 107
MAX_TCP_HOLD = 300.0
MAX_UPSTREAM_TIMEOUT = 30.0

T = TypeVar("T")


class SpecError(ValueError):
    """The spec cannot be used; the message starts with the path of the bad field."""


def _fail(where: str, problem: str) -> SpecError:
    return SpecError(f"{where}: {problem}")


def _object(value: object, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where or "spec", f"must be a JSON object, got {type(value).__name__}")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(f"{where}.{missing[0]}" if where else missing[0], "is required")
    unknown = sorted(set(value) - required - optional)
    if unknown:
        raise _fail(f"{where}.{unknown[0]}" if where else unknown[0], "unknown field")
    return value


def _list(value: object, where: str, *, non_empty: bool = True) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, f"must be a JSON list, got {type(value).__name__}")
    if non_empty and not value:
        raise _fail(where, "must not be empty")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"must be a non-empty string, got {value!r}")
    return value


def _number(value: object, where: str, low: float, high: float) -> float:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and low < value <= high):  # type: ignore[arg-type]
        raise _fail(where, f"must be a number above {low:g} and at most {high:g}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _integer(value: object, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(where, f"must be an integer from {low} to {high}, got {value!r}")
    return value


def _items(values: list[Any], where: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
    return tuple(parse(value, f"{where}[{i}]") for i, value in enumerate(values))


@dataclass(frozen=True)
class ListenAddr:
    """One IP literal and port; port 0 means "any free port"."""

    host: str
    port: int

    @classmethod
    def parse(cls, value: object, where: str) -> ListenAddr:
        text = _text(value, where)
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise _fail(where, f"must be ADDRESS:PORT or [IPv6]:PORT, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise _fail(where, f"an IPv6 address needs brackets: [{host}]:{port_text}")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            problem = f"{host!r} is not an IP address (the sim never resolves names)"
            raise _fail(where, problem) from None
        port = int(port_text)
        if port > 65535:
            raise _fail(where, f"port {port} is out of range 0-65535")
        return cls(str(ip), port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}


def _listen(entry: dict[str, Any], where: str) -> tuple[ListenAddr, ...]:
    return _items(_list(entry["listen"], f"{where}.listen"), f"{where}.listen", ListenAddr.parse)


def _record(value: object, where: str) -> tuple[str, int, str]:
    items = _list(value, where)
    if len(items) != 3:
        raise _fail(where, f"must be [TYPE, TTL, RDATA], got {value!r}")
    rdtype = _text(items[0], f"{where}[0]")
    ttl = _integer(items[1], f"{where}[1]", 0, 2**31 - 1)
    return rdtype, ttl, _text(items[2], f"{where}[2]")


def _zone(apex: str, value: object, where: str) -> Zone:
    if not isinstance(value, dict):
        raise _fail(where, "must map owner names to lists of [TYPE, TTL, RDATA]")
    records = {
        owner: _items(_list(entries, f"{where}[{owner!r}]"), f"{where}[{owner!r}]", _record)
        for owner, entries in value.items()
    }
    try:
        return Zone.from_records(apex, records)
    except Exception as exc:  # dnspython raises many types for bad names and rdata
        raise _fail(where, f"bad zone data: {exc}") from exc


@dataclass(frozen=True)
class DnsSpec:
    """Authoritative servers for `zones`, one per listen address (UDP and TCP)."""

    listen: tuple[ListenAddr, ...]
    zones: tuple[Zone, ...]

    @classmethod
    def parse(cls, value: object, where: str) -> DnsSpec:
        entry = _object(value, where, {"listen", "zones"}, set())
        zones = entry["zones"]
        if not isinstance(zones, dict) or not zones:
            raise _fail(f"{where}.zones", "must be a non-empty object of zone apex -> records")
        parsed = tuple(
            _zone(apex, records, f"{where}.zones[{apex!r}]") for apex, records in zones.items()
        )
        return cls(_listen(entry, where), parsed)


def _stub(apex: str, value: object, where: str) -> tuple[tuple[str, int], ...]:
    addrs = _items(_list(value, where), where, ListenAddr.parse)
    if any(addr.port == 0 for addr in addrs):
        raise _fail(where, "a stub server needs a real port, not 0")
    return tuple((addr.host, addr.port) for addr in addrs)


@dataclass(frozen=True)
class RecursorSpec:
    """Recursive resolvers that ask the stub servers of each zone (exporter.sim.recursor)."""

    listen: tuple[ListenAddr, ...]
    stubs: Mapping[str, tuple[tuple[str, int], ...]]
    upstream_timeout: float = 0.5

    @classmethod
    def parse(cls, value: object, where: str) -> RecursorSpec:
        entry = _object(value, where, {"listen", "stubs"}, {"upstream_timeout"})
        stubs = entry["stubs"]
        if not isinstance(stubs, dict) or not stubs:
            raise _fail(f"{where}.stubs", "must be a non-empty object of zone -> [ADDR:PORT]")
        parsed = {
            _text(apex, f"{where}.stubs"): _stub(apex, addrs, f"{where}.stubs[{apex!r}]")
            for apex, addrs in stubs.items()
        }
        timeout = entry.get("upstream_timeout", 0.5)
        timeout = _number(timeout, f"{where}.upstream_timeout", 0, MAX_UPSTREAM_TIMEOUT)
        return cls(_listen(entry, where), MappingProxyType(parsed), timeout)


def _hostname(value: object, where: str) -> str:
    name = _text(value, where).lower().rstrip(".")
    labels = name.split(".")
    if "*" in name and (labels[0] != "*" or "*" in labels[1:] or len(labels) < 3):
        raise _fail(where, f"a wildcard must be one leftmost label like *.facebook.com: {name!r}")
    if not all(labels) or " " in name:
        raise _fail(where, f"not a hostname: {name!r}")
    return name


@dataclass(frozen=True)
class HttpsSpec:
    """Front ends (frontend.py) with one SNI-selected certificate per hostname; with
    `http3`, an HTTP/3 edge (edge.py) on UDP at each same address and port."""

    listen: tuple[ListenAddr, ...]
    hostnames: tuple[str, ...]
    http3: bool = False

    @classmethod
    def parse(cls, value: object, where: str) -> HttpsSpec:
        entry = _object(value, where, {"listen", "hostnames"}, {"http3"})
        names = _items(
            _list(entry["hostnames"], f"{where}.hostnames"), f"{where}.hostnames", _hostname
        )
        http3 = entry.get("http3", False)
        if not isinstance(http3, bool):
            raise _fail(f"{where}.http3", f"must be true or false, got {http3!r}")
        return cls(_listen(entry, where), names, http3)


@dataclass(frozen=True)
class TcpSpec:
    """A port that accepts and then says nothing (WhatsApp's chat port, seen from outside)."""

    listen: tuple[ListenAddr, ...]
    name: str
    max_connections: int = 256
    hold_seconds: float = 30.0

    @classmethod
    def parse(cls, value: object, where: str) -> TcpSpec:
        entry = _object(value, where, {"listen", "name"}, {"max_connections", "hold_seconds"})
        cap = _integer(entry.get("max_connections", 256), f"{where}.max_connections", 1, 65536)
        hold = _number(entry.get("hold_seconds", 30.0), f"{where}.hold_seconds", 0, MAX_TCP_HOLD)
        return cls(_listen(entry, where), _text(entry["name"], f"{where}.name"), cap, hold)


def _path(value: object, where: str, base: Path | None) -> Path:
    path = Path(_text(value, where))
    return path if path.is_absolute() or base is None else base / path


@dataclass(frozen=True)
class NodeSpec:
    control_socket: Path
    ca_dir: Path
    dns: tuple[DnsSpec, ...] = ()
    recursors: tuple[RecursorSpec, ...] = ()
    https: tuple[HttpsSpec, ...] = ()
    tcp: tuple[TcpSpec, ...] = ()

    @classmethod
    def from_json(cls, data: object, *, base: Path | None = None) -> NodeSpec:
        """Validate a decoded spec; relative paths are resolved against `base`."""
        sections = {"dns", "recursors", "https", "tcp"}
        doc = _object(data, "", {"control_socket", "ca_dir"}, sections)
        control = _path(doc["control_socket"], "control_socket", base)
        if len(os.fsencode(control)) > MAX_SOCKET_PATH:
            raise _fail("control_socket", f"longer than {MAX_SOCKET_PATH} bytes: {control}")

        def section(name: str, parse: Callable[[Any, str], T]) -> tuple[T, ...]:
            return _items(_list(doc.get(name, []), name, non_empty=False), name, parse)

        tcp = section("tcp", TcpSpec.parse)
        names = [entry.name for entry in tcp]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise _fail(f"tcp[{i}].name", f"{name!r} is used twice")
        return cls(
            control_socket=control,
            ca_dir=_path(doc["ca_dir"], "ca_dir", base),
            dns=section("dns", DnsSpec.parse),
            recursors=section("recursors", RecursorSpec.parse),
            https=section("https", HttpsSpec.parse),
            tcp=tcp,
        )

    @classmethod
    def load(cls, path: str | Path) -> NodeSpec:
        file = Path(path)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SpecError(f"{file}: cannot read: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise SpecError(f"{file}: not JSON: {exc}") from exc
        try:
            return cls.from_json(data, base=file.resolve().parent)
        except SpecError as exc:
            raise SpecError(f"{file}: {exc}") from exc
