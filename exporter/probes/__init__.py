"""The prober registry: kind -> (params dataclass, probe body).

Adding a prober is one module here plus one line below; config validation, scheduling
and metrics pick it up from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model import ProbeResult
from exporter.spec import CheckSpec

from .base import ProbeBody, ProbeEnv, execute
from .dns import DnsParams, probe_dns
from .http import HttpParams, probe_http
from .tcp import TcpParams, probe_tcp
from .tls import TlsParams, probe_tls


@dataclass(frozen=True, slots=True)
class ProberKind:
    params: type
    body: ProbeBody


REGISTRY: dict[str, ProberKind] = {
    "dns": ProberKind(DnsParams, probe_dns),
    "tcp": ProberKind(TcpParams, probe_tcp),
    "tls": ProberKind(TlsParams, probe_tls),
    "http": ProberKind(HttpParams, probe_http),
}


async def run_probe(check: CheckSpec, env: ProbeEnv) -> ProbeResult:
    """Probe once. Never raises: every failure is a ProbeResult with a reason."""
    return await execute(check, env, REGISTRY[check.kind].body)


__all__ = ["REGISTRY", "ProbeEnv", "ProberKind", "run_probe"]
