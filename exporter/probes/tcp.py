"""TCP prober: can we open a connection to host:port (e.g. WhatsApp chat on 5222)?"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from exporter.model import Phase
from exporter.spec import CheckSpec

from . import sockets
from .base import ProbeEnv, ProbeRun


@dataclass(frozen=True, slots=True)
class TcpParams:
    host: str
    port: int

    def check(self) -> list[tuple[str, str]]:
        return [] if 0 < self.port < 65536 else [("port", f"port {self.port} is not 1-65535")]


async def resolve(
    host: str, check: CheckSpec, env: ProbeEnv, run: ProbeRun, *, use_override: bool = True
) -> list[str]:
    """Addresses for host in the check's family, timed as the resolve phase."""
    with run.clock.phase(Phase.RESOLVE):
        return await env.resolver.resolve(
            host,
            check.ip_family,
            # What is left of the probe's own deadline (event-loop time, converted): a
            # redirect hop's lookup must not get a whole timeout again.
            deadline=time.monotonic()
            + min(check.timeout, run.deadline - asyncio.get_running_loop().time()),
            override=check.resolve_to if use_override else (),
        )


async def probe_tcp(check: CheckSpec, env: ProbeEnv, run: ProbeRun) -> str:
    params: TcpParams = check.params
    addresses = await resolve(params.host, check, env, run)
    sock = await sockets.connect(addresses, params.port, run, env.policy)
    peer = sock.getpeername()[0]
    sock.close()
    return f"connected to {params.host}:{params.port} ({sockets.family_of(peer)})"
