"""TLS prober: connect and complete a verified handshake; report version and expiry."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

from exporter.model import Reason
from exporter.spec import CheckSpec

from . import sockets
from .base import ProbeEnv, ProbeFailure, ProbeRun
from .tcp import resolve

_VERSION_ORDER = {"TLSv1": 0, "TLSv1.1": 1, "TLSv1.2": 2, "TLSv1.3": 3}


@dataclass(frozen=True, slots=True)
class TlsParams:
    host: str
    port: int = 443
    # SNI and the name verified; defaults to host.
    server_name: str | None = None
    ca_file: str | None = None
    min_version: Literal["TLSv1.2", "TLSv1.3"] | None = None

    def check(self) -> list[tuple[str, str]]:
        problems = sockets.ca_file_problem(self.ca_file)
        if not 0 < self.port < 65536:
            problems.append(("port", f"port {self.port} is not 1-65535"))
        return problems


def version_too_old(version: str | None, minimum: str | None) -> bool:
    if minimum is None or version is None:
        return False
    return _VERSION_ORDER.get(version, -1) < _VERSION_ORDER[minimum]


async def probe_tls(check: CheckSpec, env: ProbeEnv, run: ProbeRun) -> str:
    params: TlsParams = check.params
    server_name = params.server_name or params.host
    context: ssl.SSLContext = env.ssl_context(params.ca_file)  # before a socket exists
    addresses = await resolve(params.host, check, env, run)
    sock = await sockets.connect(addresses, params.port, run, env.policy)
    transport = await sockets.handshake(sock, context, server_name, run)
    transport.close()
    version = run.facts.get("tls_version")
    if version_too_old(version, params.min_version):
        raise ProbeFailure(
            Reason.TLS_VERSION, f"{server_name} negotiated {version}, below {params.min_version}"
        )
    return f"{server_name}:{params.port} {version}"
