"""A sim node: one process running a set of simulated Meta servers, steered over a UNIX socket.

The lab starts one node per network namespace (`ip netns exec NS python -m exporter.sim node
--spec spec.json`); the demo builds the same servers in its own process instead
(exporter/cli/demo.py). A node serves what its JSON spec lists
(exporter.sim.nodespec: DNS, recursors, HTTPS front ends with HTTP/3, TCP sinks).

The CA: every node of a lab loads the root kept in `ca_dir`; the first node to start with an
empty `ca_dir` creates it while holding an exclusive `flock` on `ca_dir/.lock`, so nodes
started in parallel still end up with one CA, and the exporter trusts `ca_dir/lab-ca.pem`.

Control API (on exporter.sim.control's JSON-over-UNIX-socket server):
    GET    /status          listeners with bound ports, counters, faults, cert conditions
    PUT    /dns/faults      {"zone": "facebook.com" | "*", "fault": "servfail" | ... | null}
    PUT    /http/faults     a frontend Fault object or a list of them (as /_sim/faults)
    DELETE /http/faults     ?host=&path= clears one fault; no query clears all
    PUT    /certs           {"hostname": ..., "condition": "valid" | ... | "expiring", "days": 3}
    PUT    /tcp/mode        {"name": ..., "mode": "accept" | "refuse" | "hang"}
    PUT    /quic            {"delay": seconds}: every QUIC datagram in is held that long
    POST   /recursor/flush  empty every recursor cache
    POST   /reset           clear every fault, certificates valid, tcp accept, no QUIC
                            delay, counters zero

HTTP/3 (edge.py) forwards to the front end on the same address, so HTTP faults show on every
protocol; its certificate is issued once at start and stays valid whatever /certs says
(certificate failures over QUIC are covered by the engine tests, not the lab).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import importlib
import json
import logging
import signal
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import dns.name
from aiohttp import web

from exporter.sim import dnsserver
from exporter.sim.certs import CA_BUNDLE_NAME, CERT_CONDITIONS, CertSpec, LabCA, SniCertificates
from exporter.sim.control import ControlError, ControlServer, NodeError, json_errors, read_body
from exporter.sim.dnsserver import DnsServer, Zone, find_zone
from exporter.sim.frontend import Fault, FaultError, FrontendServer, FrontendState
from exporter.sim.nodespec import (
    DnsSpec,
    HttpsSpec,
    ListenAddr,
    NodeSpec,
    RecursorSpec,
    SpecError,
    _hostname,
    _number,
    _text,
)
from exporter.sim.tcpsink import TCP_MODES, TcpMode, TcpSink, _bind_error

__all__ = ["SimNode", "run_node"]

log = logging.getLogger(__name__)

MAX_EXPIRING_DAYS = 3650
MAX_QUIC_DELAY = 30.0
CA_LOCK_NAME = ".lock"

CERT_CONDITION_NAMES = (*CERT_CONDITIONS, "expiring")
DNS_FAULT_NAMES = tuple(fault.value for fault in dnsserver.Fault)


# --------------------------------------------------------------------------- the shared CA


def shared_lab_ca(directory: Path) -> LabCA:
    """Load the lab CA from `directory`, creating it there if this is the first node.

    Blocking (a file lock): call it in a thread from async code.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / CA_LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if LabCA.is_saved_in(directory):
            return LabCA.load(directory)
        ca = LabCA()
        ca.save(directory)
        log.info("sim node: created the lab CA in %s", directory)
        return ca


# --------------------------------------------------------------------------- the node


class _Listener(Protocol):
    """What DnsServer, FrontendServer and RecursorServer have in common."""

    @property
    def port(self) -> int: ...

    async def start(self) -> Any: ...

    async def close(self) -> None: ...


@dataclass
class _HttpsGroup:
    spec: HttpsSpec
    certs: SniCertificates
    servers: list[FrontendServer] = field(default_factory=list)
    conditions: dict[str, str] = field(default_factory=dict)
    edges: list[Any] = field(default_factory=list)  # edge.EdgeServer, imported when needed

    def covers(self, hostname: str) -> bool:
        if hostname in self.spec.hostnames:
            return True
        parent = hostname.split(".", 1)[1] if "." in hostname else ""
        return f"*.{parent}" in self.spec.hostnames


@dataclass
class _DnsGroup:
    spec: DnsSpec
    servers: list[DnsServer] = field(default_factory=list)


@dataclass
class _RecursorGroup:
    spec: RecursorSpec
    recursor: Any  # exporter.sim.recursor.Recursor, imported only when needed
    servers: list[Any] = field(default_factory=list)


def _load_module(name: str, what: str) -> Any:
    """Lazily: only nodes that run a recursor (or an HTTP/3 edge) need its libraries."""
    try:
        return importlib.import_module(f"exporter.sim.{name}")
    except ImportError as exc:
        raise NodeError(f"{what}: exporter.sim.{name} is not available: {exc}") from exc


def _recursor_stats(group: _RecursorGroup) -> dict[str, int]:
    recursor = group.recursor
    dropped = sum(server.dropped for server in group.servers)
    extra = {"cache_size": recursor.cache_size, "inflight": recursor.inflight, "dropped": dropped}
    return {**recursor.counters.snapshot(), **extra}


def _display(fault_key: str) -> str:
    return fault_key if fault_key == dnsserver.WILDCARD_FAULT else fault_key.rstrip(".")


def _zone_name(zone: Zone) -> str:
    return zone.origin.to_text(omit_final_dot=True)


def _queries_by_zone(group: _DnsGroup) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for server in group.servers:
        for (name, _), count in server.counts.items():
            zone = find_zone(dns.name.from_text(name), group.spec.zones)
            totals[_zone_name(zone) if zone is not None else "(not served)"] += count
    return dict(totals)


def cert_spec_for(condition: str, days: float | None) -> CertSpec:
    if condition == "expiring":
        assert days is not None
        return CertSpec.expiring_at(dt.datetime.now(dt.UTC) + dt.timedelta(days=days))
    return CERT_CONDITIONS[condition]()


class SimNode:
    """Everything one spec describes; start() binds all, close() undoes all."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.http_state = FrontendState()  # shared by every https listener of the node
        self.ca: LabCA | None = None
        self._dns: list[_DnsGroup] = []
        self._recursors: list[_RecursorGroup] = []
        self._https: list[_HttpsGroup] = []
        self._tcp: dict[str, TcpSink] = {}
        self._control: ControlServer | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def ca_file(self) -> Path:
        return self.spec.ca_dir / CA_BUNDLE_NAME

    # -- lifecycle --

    async def start(self) -> None:
        """Bind every listener, then the control socket; on any failure undo all and raise."""
        try:
            self.ca = await self._load_ca()
            await self._start_dns()
            await self._start_recursors()
            await self._start_https()
            await self._start_tcp()
            self._control = ControlServer(build_control_app(self), self.spec.control_socket)
            await self._control.start()
            self._stack.push_async_callback(self._control.close)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self._stack.aclose()

    async def _load_ca(self) -> LabCA:
        try:
            return await asyncio.to_thread(shared_lab_ca, self.spec.ca_dir)
        except (OSError, ValueError) as exc:  # permissions, a damaged PEM file
            raise NodeError(f"ca_dir: cannot load or create the lab CA: {exc}") from exc

    async def __aenter__(self) -> SimNode:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _listen(self, what: str, addr: ListenAddr, server: _Listener) -> None:
        try:
            await server.start()
        except OSError as exc:
            raise _bind_error(what, addr, exc) from exc
        self._stack.push_async_callback(server.close)
        log.info("sim node: %s listening on %s", what, ListenAddr(addr.host, server.port))

    async def _start_dns(self) -> None:
        for i, spec in enumerate(self.spec.dns):
            group = _DnsGroup(spec)
            self._dns.append(group)
            for addr in spec.listen:
                server = DnsServer(spec.zones, addr.host, addr.port)
                await self._listen(f"dns[{i}]", addr, server)
                group.servers.append(server)

    async def _start_recursors(self) -> None:
        if not self.spec.recursors:
            return
        module = _load_module("recursor", "recursors")
        for i, spec in enumerate(self.spec.recursors):
            recursor = module.Recursor(spec.stubs, upstream_timeout=spec.upstream_timeout)
            group = _RecursorGroup(spec, recursor)
            self._recursors.append(group)
            for addr in spec.listen:
                server = module.RecursorServer(recursor, addr.host, addr.port)
                await self._listen(f"recursors[{i}]", addr, server)
                group.servers.append(server)

    async def _start_https(self) -> None:
        assert self.ca is not None
        for i, spec in enumerate(self.spec.https):
            # Clients without SNI (or asking for an IP) get a leaf for every name and address.
            default = [*spec.hostnames, *{addr.host for addr in spec.listen}]
            certs = SniCertificates(
                self.ca, dict.fromkeys(spec.hostnames, CertSpec()), default_hostnames=default
            )
            group = _HttpsGroup(spec, certs, conditions=dict.fromkeys(spec.hostnames, "valid"))
            self._https.append(group)
            edge = _load_module("edge", f"https[{i}].http3") if spec.http3 else None
            for addr in spec.listen:
                server = FrontendServer(self.http_state, certs.ssl_context, addr.host, addr.port)
                await self._listen(f"https[{i}]", addr, server)
                group.servers.append(server)
                if edge is not None:  # UDP on the front end's own address and port
                    quic = edge.EdgeServer(
                        self.ca, default, addr.host, server.port, addr.host, server.port, tcp=False
                    )
                    try:
                        await self._listen(
                            f"https[{i}] http3", ListenAddr(addr.host, server.port), quic
                        )
                    except RuntimeError as exc:  # hypercorn did not start: said, not a trace
                        raise NodeError(f"https[{i}].http3: {exc}") from exc
                    group.edges.append(quic)

    async def _start_tcp(self) -> None:
        for spec in self.spec.tcp:
            sink = TcpSink(spec)
            await sink.set_mode("accept")
            self._stack.push_async_callback(sink.close)
            self._tcp[spec.name] = sink
            bound = ", ".join(str(addr) for addr in sink.listen)
            log.info("sim node: tcp %r listening on %s", spec.name, bound)

    # -- operations behind the control API --

    def zone_names(self) -> set[str]:
        return {dnsserver.fault_key(z.origin) for g in self._dns for z in g.spec.zones}

    def set_dns_fault(self, zone: str, fault: dnsserver.Fault | None) -> None:
        for group in self._dns:
            for server in group.servers:
                if fault is None:
                    server.clear_fault(zone)
                else:
                    server.set_fault(zone, fault)

    def set_http_faults(self, faults: Iterable[Fault]) -> None:
        for fault in faults:
            self.http_state.set_fault(fault)

    def clear_http_faults(self, host: str | None, path: str | None) -> int:
        if host is None and path is None:
            cleared = len(self.http_state.faults)
            self.http_state.clear_faults()
            return cleared
        return int(self.http_state.clear_fault(host or "*", path))

    def https_groups_for(self, hostname: str) -> list[_HttpsGroup]:
        return [group for group in self._https if group.covers(hostname)]

    def set_cert(self, hostname: str, condition: str, days: float | None = None) -> None:
        """Issue a leaf in `condition` for `hostname` on every listener that serves it."""
        spec = cert_spec_for(condition, days)
        for group in self.https_groups_for(hostname):
            group.certs.set(hostname, spec)
            group.conditions[hostname] = condition

    async def set_tcp_mode(self, name: str, mode: TcpMode) -> None:
        await self._tcp[name].set_mode(mode)

    def set_quic_delay(self, seconds: float) -> int:
        """Hold every QUIC datagram in for `seconds` (a slow QUIC path); returns the edges."""
        edges = [edge for group in self._https for edge in group.edges]
        for edge in edges:
            edge.quic_delay = seconds
        return len(edges)

    def flush_recursors(self) -> int:
        for group in self._recursors:
            group.recursor.flush()
        return len(self._recursors)

    async def reset(self) -> None:
        """Back to the state right after start: no faults, valid certs, tcp accept, zeros."""
        for group in self._dns:
            for server in group.servers:
                server.clear_faults()
                server.reset_counts()
        self.http_state.clear_faults()
        self.http_state.reset_counts()
        for https in self._https:
            self._reset_certs(https)
        self.set_quic_delay(0.0)
        for sink in self._tcp.values():
            await sink.set_mode("accept")
            sink.reset_counts()
        for recursors in self._recursors:
            recursors.recursor.flush()
            recursors.recursor.counters.reset()
            for server in recursors.servers:
                server.dropped = 0

    def _reset_certs(self, group: _HttpsGroup) -> None:
        for hostname in list(group.certs.specs):
            if hostname not in group.spec.hostnames:
                group.certs.remove(hostname)  # added by PUT /certs for a covered name
            elif group.certs.specs[hostname] != CertSpec():
                group.certs.set(hostname, CertSpec())  # re-issue only what was changed
        group.conditions = dict.fromkeys(group.spec.hostnames, "valid")

    # -- status --

    def status(self) -> dict[str, Any]:
        state = self.http_state
        return {
            "control_socket": str(self.spec.control_socket),
            "ca_file": str(self.ca_file),
            "dns": [self._dns_status(group) for group in self._dns],
            "recursors": [self._recursor_status(group) for group in self._recursors],
            "https": [self._https_status(group) for group in self._https],
            "http": {
                "requests": dict(state.requests),
                "in_flight": state.in_flight,
                "faults": [fault.to_json() for fault in state.faults.values()],
            },
            "tcp": [self._tcp_status(sink) for sink in self._tcp.values()],
        }

    @staticmethod
    def _dns_status(group: _DnsGroup) -> dict[str, Any]:
        faults = group.servers[0].faults if group.servers else {}
        return {
            "listen": [{"host": s.address, "port": s.port} for s in group.servers],
            "zones": [_zone_name(zone) for zone in group.spec.zones],
            "faults": {_display(zone): str(fault) for zone, fault in faults.items()},
            "queries": sum(server.queries for server in group.servers),
            "queries_by_zone": _queries_by_zone(group),
        }

    @staticmethod
    def _recursor_status(group: _RecursorGroup) -> dict[str, Any]:
        listen = zip(group.spec.listen, group.servers, strict=False)
        return {
            "listen": [{"host": addr.host, "port": server.port} for addr, server in listen],
            "stubs": {
                z: [str(ListenAddr(*a)) for a in addrs] for z, addrs in group.spec.stubs.items()
            },
            "stats": _recursor_stats(group),
        }

    @staticmethod
    def _https_status(group: _HttpsGroup) -> dict[str, Any]:
        specs = group.certs.specs
        certs = {
            name: {
                "condition": condition,
                "not_after": specs[name].not_after.isoformat() if specs[name].not_after else None,
            }
            for name, condition in group.conditions.items()
        }
        return {
            "listen": [{"host": s.host, "port": s.port} for s in group.servers],
            "hostnames": list(group.spec.hostnames),
            "certs": certs,
            "http3": [{"host": e.host, "port": e.port, "delay": e.quic_delay} for e in group.edges],
        }

    @staticmethod
    def _tcp_status(sink: TcpSink) -> dict[str, Any]:
        return {
            "name": sink.spec.name,
            "mode": sink.mode,
            "listen": [addr.to_json() for addr in sink.listen],
            "accepts": sink.accepts,
            "rejected": sink.rejected,
            "open_connections": sink.open_connections,
        }

    def tcp_names(self) -> list[str]:
        return list(self._tcp)

    def https_hostnames(self) -> list[str]:
        return [name for group in self._https for name in group.spec.hostnames]


# --------------------------------------------------------------------------- control API


NODE_KEY = web.AppKey("sim_node", SimNode)


def _choice(doc: Mapping[str, Any], name: str, choices: Sequence[str]) -> str:
    value = doc[name]
    if value not in choices:
        raise ControlError(name, f"must be one of {', '.join(choices)}; got {value!r}")
    return value  # type: ignore[no-any-return]


def _ok(doc: Mapping[str, Any]) -> web.Response:
    return web.json_response({"ok": True, **doc})


async def get_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE_KEY].status())


def _dns_zone(node: SimNode, value: object) -> str:
    if value == dnsserver.WILDCARD_FAULT:
        return value
    try:
        key = dnsserver.fault_key(_text(value, "zone"))
    except Exception as exc:  # SpecError or a dnspython name error
        raise ControlError("zone", f"not a zone name: {value!r}") from exc
    if key not in node.zone_names():
        served = ", ".join(sorted(node.zone_names())) or "none"
        raise ControlError("zone", f"{value!r} is not served by this node (serves: {served})")
    return key


async def put_dns_fault(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    doc = await read_body(request, {"zone", "fault"}, set())
    zone = _dns_zone(node, doc["zone"])
    fault = None
    if doc["fault"] is not None:
        try:
            fault = dnsserver.Fault(doc["fault"])
        except ValueError as exc:
            choices = ", ".join(DNS_FAULT_NAMES)
            raise ControlError("fault", f"must be one of {choices} or null") from exc
    node.set_dns_fault(zone, fault)
    return _ok({"zone": _display(zone), "fault": None if fault is None else str(fault)})


async def put_http_faults(request: web.Request) -> web.Response:
    try:
        doc = await request.json()
    except ValueError as exc:
        raise ControlError("body", f"not JSON: {exc}") from exc
    items = doc if isinstance(doc, list) else [doc]
    try:
        faults = [Fault.from_json(item) for item in items]  # all validated before any is set
    except FaultError as exc:
        raise ControlError("fault", str(exc)) from exc
    request.app[NODE_KEY].set_http_faults(faults)
    return _ok({"faults": [fault.to_json() for fault in faults]})


async def delete_http_faults(request: web.Request) -> web.Response:
    query = request.query
    cleared = request.app[NODE_KEY].clear_http_faults(query.get("host"), query.get("path"))
    return _ok({"cleared": cleared})


async def put_cert(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    doc = await read_body(request, {"hostname", "condition"}, {"days"})
    try:
        hostname = _hostname(doc["hostname"], "hostname")
    except SpecError as exc:
        raise ControlError("hostname", str(exc).split(": ", 1)[1]) from exc
    if not node.https_groups_for(hostname):
        served = ", ".join(node.https_hostnames()) or "none"
        raise ControlError("hostname", f"{hostname!r} is not served here (serves: {served})")
    condition = _choice(doc, "condition", CERT_CONDITION_NAMES)
    days = _cert_days(doc, condition)
    node.set_cert(hostname, condition, days)
    return _ok({"hostname": hostname, "condition": condition, "days": days})


def _cert_days(doc: Mapping[str, Any], condition: str) -> float | None:
    if condition != "expiring":
        if "days" in doc:
            raise ControlError("days", "only for condition 'expiring'")
        return None
    if "days" not in doc:
        raise ControlError("days", "is required for condition 'expiring'")
    try:
        return _number(doc["days"], "days", 0, MAX_EXPIRING_DAYS)
    except SpecError as exc:
        raise ControlError("days", str(exc).split(": ", 1)[1]) from exc


async def put_tcp_mode(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    doc = await read_body(request, {"name", "mode"}, set())
    name = _choice(doc, "name", node.tcp_names())
    mode: TcpMode = _choice(doc, "mode", TCP_MODES)  # type: ignore[assignment]
    await node.set_tcp_mode(name, mode)
    return _ok({"name": name, "mode": mode})


async def put_quic(request: web.Request) -> web.Response:
    doc = await read_body(request, {"delay"}, set())
    delay = 0.0
    if doc["delay"] != 0 or isinstance(doc["delay"], bool):  # 0 takes the delay away
        try:
            delay = _number(doc["delay"], "delay", 0, MAX_QUIC_DELAY)
        except SpecError as exc:
            raise ControlError("delay", str(exc).split(": ", 1)[1]) from exc
    edges = request.app[NODE_KEY].set_quic_delay(delay)
    if not edges:
        raise ControlError("delay", "this node serves no HTTP/3 (no https entry has http3)")
    return _ok({"delay": delay, "edges": edges})


async def post_recursor_flush(request: web.Request) -> web.Response:
    return _ok({"flushed": request.app[NODE_KEY].flush_recursors()})


async def post_reset(request: web.Request) -> web.Response:
    await request.app[NODE_KEY].reset()
    return _ok({})


def build_control_app(node: SimNode) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[NODE_KEY] = node
    app.router.add_get("/status", get_status)
    app.router.add_put("/dns/faults", put_dns_fault)
    app.router.add_put("/http/faults", put_http_faults)
    app.router.add_delete("/http/faults", delete_http_faults)
    app.router.add_put("/certs", put_cert)
    app.router.add_put("/tcp/mode", put_tcp_mode)
    app.router.add_put("/quic", put_quic)
    app.router.add_post("/recursor/flush", post_recursor_flush)
    app.router.add_post("/reset", post_reset)
    return app


# --------------------------------------------------------------------------- process


async def run_node(spec: NodeSpec, out: IO[str] = sys.stdout) -> int:
    """Run until SIGTERM or SIGINT; the ready line goes to `out` once everything listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    node = SimNode(spec)
    try:
        try:
            await node.start()
        except NodeError as exc:
            print(f"sim node: {exc}", file=sys.stderr)
            return 1
        ready = {"ready": True, "control_socket": str(spec.control_socket)}
        print(json.dumps({**ready, "ca_file": str(node.ca_file)}), file=out, flush=True)
        await stop.wait()
        log.info("sim node: stopping")
        return 0
    finally:
        await node.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
