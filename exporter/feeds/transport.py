"""An aiohttp session for the feeds that obeys the exporter's rules like the probers do:
names resolve through the exporter's own resolver (never libc), and every address is
checked against the egress policy before a packet leaves — IP literals included, which
aiohttp never hands to the resolver."""

from __future__ import annotations

import socket
import time
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from exporter.egress import EgressPolicy
from exporter.probes.base import ProbeEnv
from exporter.probes.http import USER_AGENT


def resolve_results(host: str, port: int, addresses: list[str]) -> list[ResolveResult]:
    """aiohttp's resolver answer for addresses the exporter's own resolver found."""
    return [
        ResolveResult(
            hostname=host,
            host=address,
            port=port,
            family=socket.AF_INET6 if ":" in address else socket.AF_INET,
            proto=0,
            flags=socket.AI_NUMERICHOST,
        )
        for address in addresses
    ]


class _ExporterResolver(AbstractResolver):
    def __init__(self, env: ProbeEnv, timeout: float) -> None:
        self._env, self._timeout = env, timeout

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        deadline = time.monotonic() + self._timeout
        addresses = await self._env.resolver.resolve(host, "auto", deadline=deadline)
        return resolve_results(host, port, addresses)

    async def close(self) -> None:
        return None


class _PolicedConnector(aiohttp.TCPConnector):
    """Checks each address against the egress policy at connect time (a private aiohttp
    hook, stable since 3.10; tests/integration/test_feeds.py guards it)."""

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy

    async def _wrap_create_connection(  # type: ignore[override]
        self, *args: Any, addr_infos: list[Any], **kwargs: Any
    ) -> Any:
        for info in addr_infos:
            self._policy.require(info[4][0], "feed address")
        return await super()._wrap_create_connection(*args, addr_infos=addr_infos, **kwargs)


def policed_session(env: ProbeEnv, timeout: float) -> aiohttp.ClientSession:
    connector = _PolicedConnector(
        env.policy,
        resolver=_ExporterResolver(env, timeout),
        use_dns_cache=False,
        ssl=env.ssl_context(),
        limit=4,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
    )
