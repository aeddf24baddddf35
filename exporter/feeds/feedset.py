"""The feeds of one config: their state, their tasks, and a frozen view for readers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from exporter.probes.base import ProbeEnv
from exporter.spec import Config

from .bgp import PrefixTable, PrefixView, withdrawn_set
from .health import FeedError, FeedHealth
from .official import Board, MalformedDocument, OfficialStatus, next_board, parse_orgs
from .pollers import JsonPoller
from .ribseed import LookingGlassSeed
from .rislive import RisLiveClient
from .transport import policed_session

log = logging.getLogger(__name__)

BASELINE_MAX_BYTES = 256 * 1024
MAX_UNKNOWN_STRINGS_LOGGED = 100


@dataclass(frozen=True, slots=True)
class HealthView:
    name: str
    up: bool
    detail: str
    last_success: float | None
    errors: Mapping[FeedError, int]


@dataclass(frozen=True, slots=True)
class Baseline:
    seeing: int
    total: int


@dataclass(frozen=True, slots=True)
class FeedsView:
    """What scrapes, the API and the verdict read; empty parts for feeds that are off."""

    health: tuple[HealthView, ...] = ()
    official: Board | None = None
    # None while the BGP stream is not connected: visibility is then unknown, not zero.
    bgp: Mapping[str, PrefixView] | None = None
    baseline: Mapping[str, Baseline] = field(default_factory=dict)

    @property
    def withdrawn(self) -> frozenset[str]:
        return withdrawn_set(self.bgp) if self.bgp is not None else frozenset()


def parse_baseline(document: Any, prefix: str) -> Baseline:
    """RIPEstat routing-status: data.visibility.v4|v6.{ris_peers_seeing,total_ris_peers}."""
    family = "v6" if ":" in prefix else "v4"
    try:
        seen = document["data"]["visibility"][family]
        seeing, total = seen["ris_peers_seeing"], seen["total_ris_peers"]
    except (KeyError, TypeError):
        raise MalformedDocument(f"no data.visibility.{family} peers in the answer") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (seeing, total)):
        raise MalformedDocument(f"data.visibility.{family}: peer counts are not counts")
    return Baseline(seeing, total)


def _feed_key(config: Config) -> tuple[Any, ...]:
    """Everything a running feed depends on: its settings, and how it resolves and connects."""
    return (
        config.official_status,
        config.bgp,
        config.egress,
        config.resolvers,
        config.hosts,
        config.ca_file,
        config.dns_timeout,
    )


class FeedSet:
    def __init__(
        self,
        config: Config,
        env: ProbeEnv,
        *,
        on_bgp_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.official_spec = config.official_status
        self._key = _feed_key(config)
        self.bgp_spec = config.bgp
        self.env = env
        self.clock = clock
        self._health: list[FeedHealth] = []
        self._jobs: list[Callable[[aiohttp.ClientSession], Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.board = Board()
        self._unknown_strings: set[str] = set()
        self.baseline: dict[str, Baseline] = {}
        self.ris: RisLiveClient | None = None
        if self.official_spec is not None:
            spec = self.official_spec
            health = self._add_health("official_status")
            poller = JsonPoller(
                health,
                spec.url,
                interval=spec.interval,
                timeout=spec.timeout,
                max_bytes=spec.max_bytes,
                on_document=self._on_orgs,
                clock=clock,
            )
            self._jobs.append(poller.run)
        if self.bgp_spec is not None:
            bgp = self.bgp_spec
            table = PrefixTable(
                bgp.prefixes,
                min_peers=bgp.min_peers,
                withdrawn_ratio=bgp.withdrawn_ratio,
                require_seed=bgp.seed_url is not None,
            )
            health = self._add_health("bgp")
            seed = None
            if bgp.seed_url is not None:
                seed = LookingGlassSeed(
                    self._add_health("bgp_seed"),
                    bgp.seed_url,
                    timeout=bgp.connect_timeout,
                )
            self.ris = RisLiveClient(
                health,
                table,
                bgp.url,
                connect_timeout=bgp.connect_timeout,
                reconnect_max=bgp.reconnect_max,
                max_message_bytes=bgp.max_message_bytes,
                on_change=on_bgp_change,
                clock=clock,
                seed=seed,
            )
            self._jobs.append(self.ris.run)
            if bgp.baseline_url is not None:
                health = self._add_health("bgp_baseline")
                for prefix in bgp.prefixes:
                    poller = JsonPoller(
                        health,
                        f"{bgp.baseline_url}?{urlencode({'resource': prefix})}",
                        interval=bgp.baseline_interval,
                        timeout=bgp.connect_timeout,
                        max_bytes=BASELINE_MAX_BYTES,
                        on_document=self._baseline_handler(prefix),
                        clock=clock,
                    )
                    self._jobs.append(poller.run)

    def _add_health(self, name: str) -> FeedHealth:
        health = FeedHealth(name)
        self._health.append(health)
        return health

    @property
    def enabled(self) -> bool:
        return bool(self._jobs)

    def same_feeds(self, config: Config) -> bool:
        """A reload keeps running feeds (and their state) when nothing they use changed."""
        return _feed_key(config) == self._key

    # -- documents ---------------------------------------------------------------------

    def _on_orgs(self, document: Any, now: float) -> None:
        components = parse_orgs(document)
        for c in components:
            if (
                c.status is OfficialStatus.UNKNOWN
                and c.text not in self._unknown_strings
                and len(self._unknown_strings) < MAX_UNKNOWN_STRINGS_LOGGED
            ):
                self._unknown_strings.add(c.text)
                log.warning(
                    "official status: unknown status string %r (org %s): reported as unknown",
                    c.text,
                    c.org,
                )
        self.board = next_board(self.board, components, now)

    def _baseline_handler(self, prefix: str) -> Callable[[Any, float], None]:
        def handle(document: Any, _: float) -> None:
            self.baseline[prefix] = parse_baseline(document, prefix)

        return handle

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if not self._jobs:
            return
        # Name lookups for any feed; each request's own timeout bounds it further.
        timeouts = [self.official_spec.timeout] if self.official_spec else []
        timeouts += [self.bgp_spec.connect_timeout] if self.bgp_spec else []
        self._session = policed_session(self.env, max(timeouts))
        self._tasks = [asyncio.create_task(job(self._session)) for job in self._jobs]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- reading -----------------------------------------------------------------------

    def withdrawn(self) -> frozenset[str]:
        """Prefixes most BGP peers withdrew; empty while the stream is down (unknown)."""
        ris = self.ris
        return ris.withdrawn if ris is not None and ris.connected else frozenset()

    def view(self) -> FeedsView:
        if not self._tasks:
            return FeedsView()  # not started (e.g. the one-shot `check`): nothing to report
        ris = self.ris
        return FeedsView(
            health=tuple(
                HealthView(h.name, h.up, h.detail, h.last_success, dict(h.errors))
                for h in self._health
            ),
            official=self.board if self.official_spec is not None else None,
            bgp=ris.table.views() if ris is not None and ris.connected else None,
            baseline=dict(self.baseline),
        )
