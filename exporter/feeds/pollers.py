"""Slow HTTP JSON polls with conditional requests (ETag / Last-Modified), one task each."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp

from exporter.net import httpbody

from .health import FeedError, FeedFailure, FeedHealth, classify

# Called with the decoded document and the time it arrived; raises to reject it.
OnDocument = Callable[[Any, float], None]


class JsonPoller:
    def __init__(
        self,
        health: FeedHealth,
        url: str,
        *,
        interval: float,
        timeout: float,
        max_bytes: int,
        on_document: OnDocument,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.health = health
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.on_document = on_document
        self.clock = clock
        self._validators: dict[str, str] = {}

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.poll(session)
            await asyncio.sleep(self.interval)

    async def poll(self, session: aiohttp.ClientSession) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                changed = await self._fetch(session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is the feed's, reported and retried
            self.health.failed(classify(exc))
            return
        self.health.ok(self.clock(), "updated" if changed else "not modified")

    async def _fetch(self, session: aiohttp.ClientSession) -> bool:
        async with session.get(
            self.url, headers=self._validators, max_redirects=3, raise_for_status=False
        ) as response:
            if response.status == 304:
                return False
            if response.status != 200:
                raise FeedFailure(FeedError.HTTP_STATUS, f"HTTP {response.status}")
            body = await read_capped(response, self.max_bytes)
            self.on_document(json.loads(body), self.clock())
            # Remember validators only for a document we accepted.
            self._validators = {
                request: response.headers[answer]
                for request, answer in (
                    ("If-None-Match", "ETag"),
                    ("If-Modified-Since", "Last-Modified"),
                )
                if answer in response.headers
            }
            return True


def read_capped(response: aiohttp.ClientResponse, cap: int) -> Awaitable[bytes]:
    """The body under the feed's cap; too large is the feed's `too_large` failure."""
    return httpbody.read_capped(response, cap, partial(FeedFailure, FeedError.TOO_LARGE))
