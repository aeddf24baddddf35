"""The validated, immutable configuration the rest of the exporter runs on.

config.py builds these from YAML; scheduler, probers and verdict only ever read them.
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


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    display_name: str
    checks: tuple[CheckSpec, ...]
    is_control: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    """Scheduler-wide settings (per-check values already resolved into each CheckSpec)."""

    confirm_failures: int = 2
    jitter: float = 0.1
    max_concurrency: int = 32


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
    checks: tuple[CheckSpec, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", MappingProxyType(dict(self.hosts)))
        checks = tuple(c for s in self.services for c in s.checks)
        object.__setattr__(self, "checks", checks)

    @property
    def meta_services(self) -> tuple[ServiceSpec, ...]:
        return tuple(s for s in self.services if not s.is_control)

    @property
    def control(self) -> ServiceSpec | None:
        return next((s for s in self.services if s.is_control), None)

    def service(self, name: str) -> ServiceSpec:
        return next(s for s in self.services if s.name == name)
