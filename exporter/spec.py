"""The validated, immutable configuration the rest of the exporter runs on.

config/loader.py builds these from YAML; scheduler, probers and verdict only ever read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .egress import EgressPolicy

Family = Literal["auto", "ip4", "ip6"]

CONTROL_SERVICE = "control"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP literal and port, e.g. a resolver or a nameserver given by address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    service: str
    name: str
    kind: str
    # The prober's own frozen params dataclass (probes/<kind>.py defines it).
    params: Any
    interval: float
    timeout: float
    recheck_interval: float
    critical: bool
    ip_family: Family
    latency_threshold: float
    # Addresses that replace DNS for the target host, like curl --resolve.
    resolve_to: tuple[str, ...] = ()
    description: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.name)

    @property
    def over_quic(self) -> bool:
        """An HTTP/3 check: it needs UDP 443, which many networks drop (the QUIC control)."""
        return self.kind == "http" and getattr(self.params, "http_version", None) == "3"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    display_name: str
    checks: tuple[CheckSpec, ...]
    is_control: bool = False
    description: str = ""
    # Official status orgs that speak for this service (feeds.official_status).
    status_orgs: tuple[str, ...] = ()
    # Prefixes holding the service's authoritative nameservers: when BGP shows every one of
    # them withdrawn, the service is down at layer bgp (feeds.bgp).
    dns_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """Scheduler-wide settings (per-check values already resolved into each CheckSpec)."""

    confirm_failures: int = 2
    jitter: float = 0.1
    max_concurrency: int = 32


@dataclass(frozen=True, slots=True)
class OfficialStatusFeed:
    """Polls Meta's status page (orgs.json) with conditional requests."""

    url: str
    interval: float
    timeout: float
    max_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BgpFeed:
    """Streams RIS Live updates for the watched prefixes."""

    url: str
    # Every watched prefix: the services' dns_prefixes, then feeds.bgp.prefixes.
    prefixes: tuple[str, ...]
    min_peers: int
    withdrawn_ratio: float
    connect_timeout: float
    reconnect_max: float
    max_message_bytes: int = 1024 * 1024
    # RIPEstat looking glass, a RIB snapshot after each connect (None: off).
    seed_url: str | None = None
    # RIPEstat routing-status, a slow baseline of visibility (None: off).
    baseline_url: str | None = None
    baseline_interval: float = 3600.0


@dataclass(frozen=True, slots=True)
class Config:
    settings: Settings
    egress: EgressPolicy
    # Empty means: read /etc/resolv.conf when the exporter starts.
    resolvers: tuple[Endpoint, ...]
    dns_timeout: float
    hosts: Mapping[str, tuple[str, ...]]
    ca_file: str | None
    services: tuple[ServiceSpec, ...]
    source: str = "<built-in catalogue>"
    official_status: OfficialStatusFeed | None = None
    bgp: BgpFeed | None = None
    checks: tuple[CheckSpec, ...] = field(init=False)
    # Looked up on every probe result: by name in O(1), not a scan of the services.
    _by_name: Mapping[str, ServiceSpec] = field(init=False, repr=False, compare=False)
    _control: ServiceSpec | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", MappingProxyType(dict(self.hosts)))
        checks = tuple(c for s in self.services for c in s.checks)
        object.__setattr__(self, "checks", checks)
        by_name = MappingProxyType({s.name: s for s in self.services})
        object.__setattr__(self, "_by_name", by_name)
        control = next((s for s in self.services if s.is_control), None)
        object.__setattr__(self, "_control", control)

    @property
    def meta_services(self) -> tuple[ServiceSpec, ...]:
        return tuple(s for s in self.services if not s.is_control)

    @property
    def control(self) -> ServiceSpec | None:
        return self._control

    def service(self, name: str) -> ServiceSpec:
        return self._by_name[name]
