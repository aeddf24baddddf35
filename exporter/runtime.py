"""The running exporter: config + store + scheduler + verdicts, and config reloads.

Everything here runs on the event loop thread. Web handlers and the collector read a
Snapshot between awaits; the scheduler feeds results in through on_result().
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .config import ConfigError
from .feeds.feedset import FeedSet, FeedsView
from .history import VANTAGE, History
from .model import ProbeResult, Status
from .probes import ProbeEnv, run_probe
from .resolver import Resolver, system_resolvers
from .scheduler import LAG_BUCKETS, LoopLagMonitor, Scheduler
from .spec import CheckSpec, Config, ServiceSpec
from .store import CheckRecord, Histogram, ResultStore
from .verdict import ServiceState, VantageHealth, next_state, service_verdict, vantage_health

log = logging.getLogger(__name__)

ConfigLoader = Callable[[], Config]


def build_env(config: Config) -> ProbeEnv:
    servers = config.resolvers or system_resolvers()
    resolver = Resolver(servers, config.egress, config.hosts, attempt_timeout=config.dns_timeout)
    return ProbeEnv(resolver, config.egress, config.ca_file)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent view for one scrape or API call (taken between awaits)."""

    config: Config
    records: Mapping[tuple[str, str], CheckRecord]
    services: Mapping[str, ServiceState]
    vantage: VantageHealth
    ready: bool
    reload_successful: bool
    reload_success_time: float
    started_at: float
    scheduler_lag: Histogram
    loop_lag: Histogram
    in_flight: int
    feeds: FeedsView


def _vantage_status(vantage: VantageHealth) -> Status:
    if vantage.verified_at == -math.inf:  # the control checks have not run yet
        return Status.UNKNOWN
    return Status.UP if vantage.up else Status.DOWN


class Runtime:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.store = ResultStore(config.checks)
        self.env = build_env(config)
        self.services: dict[str, ServiceState] = {}
        self.history = History()
        self.vantage = VantageHealth(True, "control checks have not run yet")
        self.started_at = clock()
        self.reload_successful = True
        self.reload_success_time = self.started_at
        self.scheduler_lag = Histogram(LAG_BUCKETS)
        self.loop_monitor = LoopLagMonitor()
        self._scheduler: Scheduler | None = None
        self._reload_lock = asyncio.Lock()
        self.feeds = self._feed_set(config)
        self._refresh_all()

    def _feed_set(self, config: Config) -> FeedSet:
        return FeedSet(config, self.env, on_bgp_change=self._refresh_all, clock=self.clock)

    # -- probing -----------------------------------------------------------------------

    async def probe(self, check: CheckSpec) -> ProbeResult:
        return await run_probe(check, self.env)

    def on_result(self, check: CheckSpec, result: ProbeResult) -> int:
        """Record a result, update verdicts; returns the check's suspect streak."""
        record = self.store.record(check.key, result)
        if record is None:
            return 0
        if not result.success:
            log.debug(
                "probe %s/%s failed: %s (%s)",
                check.service,
                check.name,
                result.reason.value,
                result.detail,
            )
        control = self.config.control
        if control is not None and check.service == control.name:
            self._refresh_all()
        else:
            if not result.success and result.measured and record.consecutive_failures == 1:
                self._reverify_vantage(check)
            self._refresh(self.config.service(check.service))
        return record.suspect_streak

    def _reverify_vantage(self, check: CheckSpec) -> None:
        """A Meta check just started failing: re-run the control checks now, so we know
        whether it is Meta or us before the failure is confirmed."""
        control = self.config.control
        if control is not None and self._scheduler is not None:
            self._scheduler.wake(
                [c.key for c in control.checks], min_gap=check.recheck_interval / 2
            )

    def _refresh_all(self) -> None:
        states = self.store.states()
        control = self.config.control
        pairs = [(c, states[c.key]) for c in control.checks] if control else []
        vantage = vantage_health(pairs, self.config.settings.confirm_failures)
        if vantage.up != self.vantage.up and (pairs and any(s.last for _, s in pairs)):
            log.warning("vantage %s: %s", "up" if vantage.up else "DOWN", vantage.detail)
        self.vantage = vantage
        self.history.note(VANTAGE, self.clock(), _vantage_status(vantage))
        known = {s.name for s in self.config.meta_services}
        for name in list(self.services):
            if name not in known:
                del self.services[name]
        self.history.retain(known)
        for service in self.config.meta_services:
            self._refresh(service, states)

    def _refresh(self, service: ServiceSpec, states: Mapping | None = None) -> None:
        if states is None:
            states = self.store.states(check.key for check in service.checks)
        verdict = service_verdict(
            service,
            states,
            self.vantage,
            self.config.settings.confirm_failures,
            self.feeds.withdrawn(),
        )
        previous = self.services.get(service.name)
        now = self.clock()
        state = next_state(previous, verdict, now)
        if previous is None or previous.status is not state.status:
            level = (
                logging.WARNING if state.status in (Status.DOWN, Status.DEGRADED) else logging.INFO
            )
            if previous is not None or state.status is not Status.UNKNOWN:
                log.log(
                    level,
                    "service %s is %s (layer %s): %s",
                    service.name,
                    state.status.value,
                    state.layer.value,
                    state.detail,
                )
        self.services[service.name] = state
        self.history.note(service.name, now, state.status, state.layer)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.loop_monitor.start()
        self._start_scheduler()
        self.feeds.start()

    def _start_scheduler(self) -> None:
        self._scheduler = Scheduler(
            self.config.checks,
            self.config.settings,
            self.probe,
            self.on_result,
            lag=self.scheduler_lag,
        )
        self._scheduler.start()
        log.info(
            "probing %d checks of %d services (egress %s)",
            len(self.config.checks),
            len(self.config.services),
            self.config.egress.describe(),
        )

    async def stop(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.stop()
            self._scheduler = None
        await self.feeds.stop()
        await self.loop_monitor.stop()

    async def reload(self, loader: ConfigLoader) -> tuple[bool, str]:
        """Load and apply a new config; an invalid one is rejected and the old keeps probing."""
        async with self._reload_lock:
            try:
                config = loader()
            except ConfigError as exc:
                self.reload_successful = False
                log.error("config reload rejected, keeping the running config:\n%s", exc)
                return False, str(exc)
            running = self._scheduler is not None
            if self._scheduler is not None:
                await self._scheduler.stop()
            self.config = config
            self.env = build_env(config)
            if not self.feeds.same_feeds(config):
                await self.feeds.stop()
                self.feeds = self._feed_set(config)
                if running:
                    self.feeds.start()
            self.store.sync(config.checks)
            self._refresh_all()
            if running:
                self._start_scheduler()
            self.reload_successful = True
            self.reload_success_time = self.clock()
            log.info("config reloaded from %s", config.source)
            return True, "config reloaded"

    # -- one-shot ----------------------------------------------------------------------

    async def check_once(self) -> None:
        """Probe every check once, re-checking failures until confirmed (the `check` command).

        The control checks run last, so they vouch for the vantage after every Meta failure
        began (see verdict.py).
        """
        limit = asyncio.Semaphore(self.config.settings.max_concurrency)
        confirm = self.config.settings.confirm_failures

        async def until_confirmed(check: CheckSpec) -> None:
            while True:
                async with limit:
                    result = await self.probe(check)
                streak = self.on_result(check, result)
                if not 0 < streak < confirm:
                    return
                await asyncio.sleep(check.recheck_interval)

        control = self.config.control
        await asyncio.gather(
            *(until_confirmed(c) for s in self.config.meta_services for c in s.checks)
        )
        if control is not None:
            await asyncio.gather(*(until_confirmed(c) for c in control.checks))

    # -- reading -----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            config=self.config,
            records=dict(self.store.records),
            services=dict(self.services),
            vantage=self.vantage,
            ready=self.store.all_ran(),
            reload_successful=self.reload_successful,
            reload_success_time=self.reload_success_time,
            started_at=self.started_at,
            scheduler_lag=self.scheduler_lag,
            loop_lag=self.loop_monitor.lag,
            in_flight=self._scheduler.in_flight if self._scheduler else 0,
            feeds=self.feeds.view(),
        )
