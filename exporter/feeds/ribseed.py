"""A RIB snapshot for the BGP table: which peers route each watched prefix right now.

RIS Live only streams changes, so after connecting the peers that keep a prefix stay silent.
RIPEstat's looking glass (near real time, by collector and peer) names them; the table takes
them as `seeing` unless the stream has already spoken of them. Prefixes are asked one at a
time (the feeds share a small connection pool); a failed one is reported as the `bgp_seed`
feed and asked again with backoff while the stream runs, without holding the others back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import aiohttp

from .bgp import Network, parse_looking_glass
from .health import FeedError, FeedFailure, FeedHealth, classify
from .pollers import read_capped

# One answer lists each peer session's route with its communities, about 1 KiB each.
SEED_MAX_BYTES = 4 * 1024 * 1024
# Entries not confirmed by their collector within this long are left out (the looking glass
# keeps routes up to a day by default): a peer that withdrew a while ago must not be seeded.
LOOK_BACK_LIMIT = 900
SOURCE_APP = "meta-outage-exporter"  # RIPEstat asks callers to name themselves


def _decode(body: bytes) -> list[tuple[str, Network]]:
    document: Any = json.loads(body)
    return parse_looking_glass(document)


class LookingGlassSeed:
    def __init__(
        self,
        health: FeedHealth,
        url: str,
        *,
        timeout: float,
        max_bytes: int = SEED_MAX_BYTES,
    ) -> None:
        self.health = health
        self.url = url
        self.timeout = timeout
        self.max_bytes = max_bytes

    def url_for(self, prefix: str) -> str:
        query = {"resource": prefix, "look_back_limit": LOOK_BACK_LIMIT, "sourceapp": SOURCE_APP}
        return f"{self.url}?{urlencode(query)}"

    async def fetch(
        self, session: aiohttp.ClientSession, prefix: str
    ) -> list[tuple[str, Network]] | None:
        """The prefix's routes, or None when the answer failed (reported)."""
        try:
            async with (
                asyncio.timeout(self.timeout),
                session.get(
                    self.url_for(prefix), max_redirects=3, raise_for_status=False
                ) as response,
            ):
                if response.status != 200:
                    raise FeedFailure(FeedError.HTTP_STATUS, f"HTTP {response.status} for {prefix}")
                body = await read_capped(response, self.max_bytes)
            # Megabytes of JSON: decoded off the event loop that times the probes.
            return await asyncio.to_thread(_decode, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is the feed's, reported and asked again
            self.health.failed(classify(exc))
            return None
