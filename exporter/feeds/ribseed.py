"""A RIB snapshot for the BGP table: which peers route each watched prefix right now.

RIS Live only streams changes, so after connecting the peers that keep a prefix stay silent.
RIPEstat's looking glass (near real time, by collector and peer) names them; the table takes
them as `seeing` unless the stream has already spoken of them. A failed fetch is reported as
the `bgp_seed` feed and retried; the stream runs unseeded meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import aiohttp

from .bgp import Network, parse_looking_glass
from .health import FeedError, FeedFailure, FeedHealth, classify
from .pollers import read_capped

# One answer lists every RIS peer's route, with communities: about 1 KiB a route.
SEED_MAX_BYTES = 8 * 1024 * 1024


class LookingGlassSeed:
    def __init__(
        self,
        health: FeedHealth,
        url: str,
        prefixes: Sequence[str],
        *,
        timeout: float,
        max_bytes: int = SEED_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.health = health
        self.url = url
        self.prefixes = list(prefixes)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.clock = clock

    async def fetch(self, session: aiohttp.ClientSession) -> list[tuple[str, Network]] | None:
        """Every watched prefix's routes, or None when any answer failed (reported)."""
        try:
            async with asyncio.timeout(self.timeout):
                answers = await asyncio.gather(*(self._one(session, p) for p in self.prefixes))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is the feed's, reported and retried
            self.health.failed(classify(exc))
            return None
        routes = [route for answer in answers for route in answer]
        peers = len({peer for peer, _ in routes})
        self.health.ok(self.clock(), f"{peers} peers routing {len(self.prefixes)} prefixes")
        return routes

    async def _one(self, session: aiohttp.ClientSession, prefix: str) -> list[tuple[str, Network]]:
        url = f"{self.url}?{urlencode({'resource': prefix})}"
        async with session.get(url, max_redirects=3, raise_for_status=False) as response:
            if response.status != 200:
                raise FeedFailure(FeedError.HTTP_STATUS, f"HTTP {response.status} for {prefix}")
            return parse_looking_glass(json.loads(await read_capped(response, self.max_bytes)))
