"""RIS Live over WebSocket: subscribe to the watched prefixes, feed the PrefixTable,
reconnect with capped exponential backoff. The table is cleared on every (re)connect,
because updates missed while disconnected would leave it wrong: a missed re-announcement
would otherwise keep a false withdrawal alive. With a seed (ribseed.py), each connection then
learns from a RIB snapshot which silent peers route the prefixes, retrying until it has."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable

import aiohttp

from .bgp import MalformedMessage, PrefixTable, parse_message, withdrawn_set
from .health import FeedError, FeedFailure, FeedHealth, classify
from .ribseed import LookingGlassSeed

log = logging.getLogger(__name__)

HEARTBEAT = 30.0
BACKOFF_FIRST = 1.0


def backoff(attempt: int, cap: float) -> float:
    """Seconds before reconnect attempt N (0-based): 1, 2, 4 ... capped, with 20 % jitter."""
    # The exponent is capped too: 2.0 ** 1024 overflows, and a feed can fail for days.
    return min(cap, BACKOFF_FIRST * 2.0 ** min(attempt, 32)) * random.uniform(0.8, 1.0)


def _stream_error(exc: BaseException | None) -> FeedFailure:
    code = getattr(exc, "code", None)
    if code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
        return FeedFailure(FeedError.TOO_LARGE, f"a message exceeded the size limit: {exc}")
    return FeedFailure(FeedError.DISCONNECTED, f"stream error: {exc}")


class RisLiveClient:
    def __init__(
        self,
        health: FeedHealth,
        table: PrefixTable,
        url: str,
        *,
        connect_timeout: float,
        reconnect_max: float,
        max_message_bytes: int,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
        seed: LookingGlassSeed | None = None,
    ) -> None:
        self.health = health
        self.seed = seed
        self.table = table
        self.url = url
        self.connect_timeout = connect_timeout
        self.reconnect_max = reconnect_max
        self.max_message_bytes = max_message_bytes
        self.on_change = on_change
        self.clock = clock
        self.connected = False
        # Prefixes withdrawn by most peers, kept current per message for the verdict.
        self.withdrawn: frozenset[str] = frozenset()
        self.messages = 0
        self.malformed = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        attempt = 0
        while True:
            try:
                await self._session(session)
                raise FeedFailure(FeedError.DISCONNECTED, "the server closed the stream")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is the feed's, reported and retried
                failure = classify(exc)
                if isinstance(exc, aiohttp.WSServerHandshakeError):
                    failure = FeedFailure(FeedError.HTTP_STATUS, f"handshake: HTTP {exc.status}")
                self.health.failed(failure)
            finally:
                if self.connected:
                    # It worked until now: come back fast, as after the first failure.
                    attempt = 0
                    self.connected = False
                    self.on_change()
            await asyncio.sleep(backoff(attempt, self.reconnect_max))
            attempt += 1

    async def _session(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(self.connect_timeout):
            ws = await session.ws_connect(
                self.url,
                heartbeat=HEARTBEAT,
                max_msg_size=self.max_message_bytes,
                autoping=True,
            )
        async with ws:
            for prefix in self.table.prefixes:
                await ws.send_json(
                    {"type": "ris_subscribe", "data": {"prefix": prefix, "moreSpecific": True}}
                )
            self.table.clear()
            self.withdrawn = frozenset()
            self.connected = True
            self.health.ok(self.clock(), f"streaming {len(self.table.prefixes)} prefixes")
            self.on_change()
            # Beside the stream, not before it: a slow snapshot must not stall the updates.
            seeding = asyncio.create_task(self._seed(session)) if self.seed else None
            try:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        self._handle(message.data)
                    elif message.type is aiohttp.WSMsgType.ERROR:
                        raise _stream_error(message.data or ws.exception())
            finally:
                if seeding is not None:
                    seeding.cancel()
                    # wait(), not await: our own cancellation must still reach us meanwhile.
                    await asyncio.wait([seeding])
                    if not seeding.cancelled() and seeding.exception() is not None:
                        log.error("BGP: seeding failed: %r", seeding.exception())

    async def _seed(self, session: aiohttp.ClientSession) -> None:
        """Seed this connection's table, a prefix at a time; a prefix whose answer failed is
        asked again, with backoff, until every prefix has its snapshot."""
        assert self.seed is not None
        pending, attempt, peers = list(self.table.prefixes), 0, 0
        while pending:
            for prefix in list(pending):
                routes = await self.seed.fetch(session, prefix)
                if routes is not None:  # a failure was reported by fetch
                    peers += self.table.seed(prefix, routes)
                    pending.remove(prefix)
                    self._update_withdrawn()
            if pending:
                await asyncio.sleep(backoff(attempt, self.reconnect_max))
                attempt += 1
        detail = f"{peers} silent peers named for {len(self.table.prefixes)} prefixes"
        self.seed.health.ok(self.clock(), detail)
        log.info("BGP: the looking glass: %s", detail)

    def _handle(self, text: str) -> None:
        self.messages += 1
        try:
            event = parse_message(json.loads(text))
        except (ValueError, MalformedMessage) as exc:
            self.malformed += 1
            self.health.errors[FeedError.MALFORMED] += 1
            # The first one, then one in a hundred: a broken feed must not flood the log.
            if self.malformed % 100 == 1:
                log.warning(
                    "feed bgp: ignoring a malformed message (%d so far): %s",
                    self.malformed,
                    str(exc)[:200],
                )
            return
        if event is None:
            return
        self.table.apply(event)
        self._update_withdrawn()

    def _update_withdrawn(self) -> None:
        before, after = self.withdrawn, withdrawn_set(self.table.views())
        if before == after:
            return
        for prefix in sorted(before ^ after):
            state = "WITHDRAWN by most peers" if prefix in after else "visible again"
            log.warning("BGP: %s is %s", prefix, state)
        self.withdrawn = after
        self.on_change()
