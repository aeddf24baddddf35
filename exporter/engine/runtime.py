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
from dataclasses import dataclass, replace

from exporter.config.loader import ConfigError
from exporter.feeds.feedset import FeedSet, FeedsView
from exporter.model import ProbeResult, Status
from exporter.net.resolver import Resolver, system_resolvers
from exporter.probes import ProbeEnv, run_probe
from exporter.spec import CheckSpec, Config, ServiceSpec

from .history import VANTAGE, History
from .scheduler import LAG_BUCKETS, LoopLagMonitor, Scheduler
from .store import CheckRecord, Histogram, ResultStore
from .verdict import (
    Judgement,
    ServiceState,
    VantageHealth,
    counts,
    judge,
    next_state,
    service_verdict,
    unjudgeable,
    vantage_health,
)

log = logging.getLogger(__name__)

ConfigLoader = Callable[[], Config]
RE_VERIFYING = "control checks pass; re-verifying them after a config reload"


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
        self.vantage = VantageHealth(True, "control checks have not run yet", known=False)
        # Meta results waiting for the control checks to vouch for the vantage (the SLI).
        # Each with the vantage it was measured under.
        self._unjudged: list[tuple[tuple[str, str], ProbeResult, VantageHealth]] = []
        self._was_down = False
        # A reload cancels the probes in flight, a control check's among them (one that was
        # about to reveal an outage of ours): an up vantage is unsettled until every control
        # check has reported again after it, so the Meta failures probed meanwhile are
        # probed afresh once it settles (a down one stays down until they say otherwise).
        self._control_fresh_from = -math.inf
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
        """Record a result, update verdicts; returns the streak the scheduler re-checks by."""
        confirm = self.config.settings.confirm_failures
        control = self.config.control
        if control is not None and check.service == control.name:
            previous = self.store.records.get(check.key)
            passed_at = previous.last.started_at if previous and previous.last else -math.inf
            record = self.store.record(check.key, result, confirm)
            if record is None:
                return 0
            if result.measured and self.vantage.known and self.vantage.up and not check.over_quic:
                # Our own path's error ratio while healthy (its blips, not its outages):
                # the baseline the burn-rate alerts hold Meta's error ratio against. Not the
                # HTTP/3 controls: a network that blocks QUIC would make theirs 100 %.
                self._count_judged(record, result)
            if not result.success and result.measured and record.consecutive_failures == 1:
                # One control check starts failing: verify the others now, so that a dying
                # uplink or resolver is known as ours within a re-check, not an interval.
                others = [c.key for c in control.checks if c.key != check.key]
                self._wake(others, check.recheck_interval / 2)
                self._void_unjudged_since(passed_at, over_quic_only=check.over_quic)
            self._refresh_all()
            # While the vantage is not up, re-check the control checks fast: its recovery
            # is what lets Meta be judged again.
            return 1 if self.vantage.known and not self.vantage.up else record.suspect_streak
        vantage = self.vantage
        fresh = result.started_at >= vantage.fresh_for(check.over_quic)
        # A failure this vantage cannot judge (its resolver or QUIC is what fails) neither
        # builds nor breaks a streak, and is not re-checked fast: it measured nothing.
        judgeable = fresh and not unjudgeable(result, vantage)
        record = self.store.record(check.key, result, confirm, streak=judgeable)
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
        if result.measured and vantage.judging:
            if not fresh:  # probed before the vantage settled: probe again, now
                self._wake([check.key], 0.0)
            elif self._no_control:  # nothing to vouch for the vantage: counts at once
                self._count_judged(record, result)
            else:
                self._unjudged.append((check.key, result, vantage))
                if judgeable and not result.success and record.consecutive_failures in (1, confirm):
                    # Is it Meta or us? Re-run the control checks now, so they vouch for
                    # the vantage after the failure that began the streak and after the
                    # one that confirmed it.
                    self._wake([c.key for c in control.checks], check.recheck_interval / 2)
            if judgeable and not result.success and record.consecutive_failures == 1:
                self._wake_critical_siblings(check)
        self._refresh(self.config.service(check.service))
        # No fast re-check while the vantage cannot judge: the result would not count.
        return record.suspect_streak if judgeable and vantage.judging else 0

    def _wake_critical_siblings(self, check: CheckSpec) -> None:
        """A critical check starts failing: probe its service's other critical checks now
        (no sooner than half a re-check after their last start), so that "every critical
        check failing, confirmed" is known about one re-check after the first failure,
        whatever phase each check's interval is in. Nothing extra while healthy, and a
        check that just ran is not probed again."""
        checks = self.config.service(check.service).checks
        critical = [c for c in checks if c.critical] or list(checks)
        if any(c.key == check.key for c in critical):
            self._wake([c.key for c in critical if c.key != check.key], check.recheck_interval / 2)

    @property
    def _no_control(self) -> bool:
        return self.config.control is None or not self.config.control.checks

    def _wake(self, keys: list[tuple[str, str]], min_gap: float) -> None:
        if self._scheduler is not None and keys:
            self._scheduler.wake(keys, min_gap=min_gap)

    def _count_judged(self, record: CheckRecord, result: ProbeResult) -> None:
        record.judged_total += 1
        if not result.success:
            record.judged_failures += 1

    def _void_unjudged_since(self, moment: float, *, over_quic_only: bool = False) -> None:
        """A control check that passed at `moment` now fails: the Meta results measured
        since then are no longer vouched for, successes and failures alike.

        Whatever its outcome, a waiting result is voided exactly when the first run of some
        control check after it fails, so under random loss the SLI is not biased (voiding
        everything waiting would void mostly successes: failures wake the control checks
        and are vouched for at once, successes wait for their next run)."""
        records = self.store.records

        def kept(key: tuple[str, str], result: ProbeResult) -> bool:
            if result.started_at <= moment:
                return True
            # An HTTP/3 control's blip says nothing about the other checks' paths.
            return over_quic_only and not ((r := records.get(key)) and r.spec.over_quic)

        self._unjudged = [entry for entry in self._unjudged if kept(entry[0], entry[1])]

    def _judge_pending(self) -> None:
        """Count into the SLI the Meta results the control checks have now vouched for;
        drop them all when the vantage goes down (nothing probed before our outage counts).
        While a control check's failure is being re-checked, they wait: a blip that clears
        voids nothing, so successes and failures are treated alike (see `counts`)."""
        vantage = self.vantage
        if vantage.known and not vantage.up:
            self._unjudged.clear()
            return
        if not vantage.judging:
            return
        waiting = []
        records = self.store.records
        for key, result, measured_under in self._unjudged:
            over_quic = (record := records.get(key)) is not None and record.spec.over_quic
            if result.started_at > vantage.verified_for(over_quic):
                waiting.append((key, result, measured_under))
            elif record is not None and counts(
                result, measured_under, vantage, over_quic=over_quic
            ):
                self._count_judged(record, result)
        self._unjudged = waiting

    def _refresh_all(self) -> None:
        control = self.config.control
        states = self.store.states(c.key for c in control.checks) if control else {}
        pairs = [(c, states[c.key]) for c in control.checks] if control else []
        vantage = vantage_health(pairs, self.config.settings.confirm_failures)
        if vantage.judging and any(
            s.last is not None and s.last.started_at < self._control_fresh_from for _, s in pairs
        ):
            vantage = replace(vantage, settled=False, detail=RE_VERIFYING)
        vantage = self._stamp(vantage)
        if vantage.known and vantage.up != self.vantage.up:
            log.warning("vantage %s: %s", "up" if vantage.up else "DOWN", vantage.detail)
        self.vantage = vantage
        self._judge_pending()
        self.history.note(VANTAGE, self.clock(), _vantage_status(vantage))
        known = {s.name for s in self.config.meta_services}
        for name in list(self.services):
            if name not in known:
                del self.services[name]
        self.history.retain(known)
        states = self.store.states()
        for service in self.config.meta_services:
            self._refresh(service, states)

    def _stamp(self, vantage: VantageHealth) -> VantageHealth:
        """Carry the vantage's marks over, and set them when it settles or recovers.

        From a mark on, Meta is judged afresh: the failure streaks restart, and the checks
        whose last result is now stale are probed again at once (their services hold).
        """
        previous = self.vantage
        marks = {
            "settled_since": previous.settled_since,
            "recovered_at": previous.recovered_at,
            "quic_since": previous.quic_since,
        }
        if vantage.known and not vantage.up:
            self._was_down = True
        if vantage.judging and (
            not previous.judging or (vantage.dns_ok and not previous.dns_ok) or self._was_down
        ):
            marks["settled_since"] = self.clock()
            if self._was_down:
                marks["recovered_at"] = marks["settled_since"]
                self._was_down = False
            stamped = replace(vantage, **marks)
            self._restart_meta(stamped)
            return stamped
        quic_settled = vantage.quic_settled and not previous.quic_settled
        if vantage.judging and (vantage.quic_ok != previous.quic_ok or quic_settled):
            # QUIC settled, blocked or open again: the HTTP/3 checks (only) are judged afresh,
            # so no streak mixes failures this vantage could judge with ones it could not.
            marks["quic_since"] = self.clock()
            stamped = replace(vantage, **marks)
            self._restart_meta(stamped, over_quic_only=True)
            return stamped
        return replace(vantage, **marks)

    def _restart_meta(self, vantage: VantageHealth, *, over_quic_only: bool = False) -> None:
        stale = []
        for service in self.config.meta_services:
            for check in service.checks:
                record = self.store.records.get(check.key)
                if record is None or (over_quic_only and not check.over_quic):
                    continue
                record.restart_streaks()
                judged = judge(record.state(), vantage, 1, over_quic=check.over_quic)
                if record.last is not None and judged is Judgement.STALE:
                    stale.append(check.key)
        if stale:
            log.info("vantage settled: probing %d Meta checks again", len(stale))
        self._wake(stale, 0.0)

    def _mark_failing(self, service: ServiceSpec, states: Mapping) -> None:
        """meta_check_failing: held while the vantage is unsettled, like the verdict."""
        vantage = self.vantage
        if vantage.known and vantage.up and not vantage.settled:
            return
        confirm = self.config.settings.confirm_failures
        for check in service.checks:
            record = self.store.records.get(check.key)
            state = states.get(check.key)
            if check.over_quic and not vantage.quic_settled:
                continue  # held while the HTTP/3 control checks confirm, like the verdict
            if record is not None and state is not None:
                judged = judge(state, vantage, confirm, over_quic=check.over_quic)
                record.counted_failing = vantage.judging and judged is Judgement.FAILING

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
        self._mark_failing(service, states)
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
            self._forget_changed_services(config)
            self.config = config
            self.env = build_env(config)
            if not self.feeds.same_feeds(config):
                await self.feeds.stop()
                self.feeds = self._feed_set(config)
                if running:
                    self.feeds.start()
            self.store.sync(config.checks)
            if running:
                self._control_fresh_from = self.clock()
            self._refresh_all()
            if running:
                self._start_scheduler()
            self.reload_successful = True
            self.reload_success_time = self.clock()
            log.info("config reloaded from %s", config.source)
            return True, "config reloaded"

    def _forget_changed_services(self, config: Config) -> None:
        """A service whose checks were added or removed starts again from unknown: its
        verdict so far rested on other checks, and a hold must not carry it over."""
        old = {s.name: {c.key for c in s.checks} for s in self.config.meta_services}
        for service in config.meta_services:
            if old.get(service.name) != {c.key for c in service.checks}:
                self.services.pop(service.name, None)

    # -- one-shot ----------------------------------------------------------------------

    async def check_once(self, rounds: int = 3) -> None:
        """Probe every check once, re-checking failures until confirmed (the `check` command).

        The control checks run first, since no Meta failure counts before the vantage has
        settled; then the Meta checks; then the control checks again, to vouch for the
        vantage after every Meta failure (see verdict.py). Meta checks left stale or
        unvouched (a control check failed meanwhile) run again, for at most `rounds` rounds.
        """
        limit = asyncio.Semaphore(self.config.settings.max_concurrency)
        confirm = self.config.settings.confirm_failures

        async def until_confirmed(check: CheckSpec) -> None:
            for _ in range(confirm):
                async with limit:
                    result = await self.probe(check)
                streak = self.on_result(check, result)
                if not 0 < streak < confirm:
                    return
                await asyncio.sleep(check.recheck_interval)

        async def each(checks: list[CheckSpec]) -> None:
            await asyncio.gather(*(until_confirmed(check) for check in checks))

        control = list(self.config.control.checks) if self.config.control else []
        meta = [check for service in self.config.meta_services for check in service.checks]
        await each(control)
        for _ in range(rounds):
            await each(meta)
            await each(control)
            if not self.vantage.judging:
                return
            meta = [check for check in meta if self._awaits_evidence(check)]
            if not meta:
                return

    def _awaits_evidence(self, check: CheckSpec) -> bool:
        record = self.store.records.get(check.key)
        if record is None:
            return False
        verdict = judge(
            record.state(),
            self.vantage,
            self.config.settings.confirm_failures,
            over_quic=check.over_quic,
        )
        return verdict in (Judgement.STALE, Judgement.PENDING)

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
