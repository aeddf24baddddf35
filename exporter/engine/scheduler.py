"""Background probing: one timer per check, each in its slot of the interval, fast re-check
on failure, bounded concurrency.

Probing runs on its own clock, not on scrapes (unlike the Prometheus "writing exporters"
advice, on purpose): detection does not wait for a scrape, a failure is re-checked within
seconds, and counters and histograms see every probe. The scheduler measures how late each
probe starts (queueing behind the concurrency limit, or a busy event loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable

from exporter.model import ProbeResult
from exporter.spec import CheckSpec, Settings

from .store import Histogram

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Spread the first probes over this much time so a restart does not fire them all at once,
# and longer with many checks: at most STARTUP_RATE first probes a second (each check's
# spread capped by its interval). Each check then keeps its phase, so a clump at start-up
# would come back every interval (2000 checks in 1 s held probes 1.8 s late: see
# docs/benchmarks.md).
STARTUP_SPREAD = 1.0
STARTUP_RATE = 100.0

Probe = Callable[[CheckSpec], Awaitable[ProbeResult]]
# Records a result and returns the check's suspect streak (the store is the one place
# that counts failures in a row).
ResultSink = Callable[[CheckSpec, ProbeResult], int]


def _now() -> float:
    """The event loop's monotonic clock: a virtual-time loop (the model test) drives it."""
    return asyncio.get_running_loop().time()


def startup_spread(checks: int) -> float:
    """Pure: seconds over which the first probes of `checks` checks are spread."""
    return max(STARTUP_SPREAD, checks / STARTUP_RATE)


GOLDEN = 0.6180339887498949  # services' slots start at well-spread fractions of the interval


def phase_slots(checks: Iterable[CheckSpec]) -> dict[tuple[str, str], float]:
    """Pure: each check's place in its interval, as a fraction in [0, 1).

    A service's critical checks sit evenly apart (3 of them: every 5 s of a 15 s interval),
    so whenever its front ends fail, one of them probes within interval/k (when they share
    an interval: a slot is a fraction of each check's own) and wakes the others. Its other
    checks are spread evenly too, half their own spacing off the start. Services start at
    different fractions, so the load is spread as well.
    """
    by_service: dict[str, list[CheckSpec]] = {}
    for check in checks:
        by_service.setdefault(check.service, []).append(check)
    slots: dict[tuple[str, str], float] = {}
    for index, (_, members) in enumerate(by_service.items()):
        start = (index * GOLDEN) % 1.0
        critical = [c for c in members if c.critical]
        others = [c for c in members if not c.critical]
        for i, check in enumerate(critical):
            slots[check.key] = (start + i / len(critical)) % 1.0
        for i, check in enumerate(others):
            slots[check.key] = (start + (i + 0.5) / len(others)) % 1.0
    return slots


def steered_due(
    due: float, check: CheckSpec, anchor: float, settings: Settings, rng: random.Random
) -> float:
    """Pure: the next regular probe after the one due at `due`, steered to its slot.

    The slot is every `anchor + n * interval`. Each step moves by at most the jitter
    (interval * jitter) toward the nearest slot, plus noise of half of it, so the gap
    between two regular probes stays within interval +/- jitter (the bound the verdict's
    timings assume; a wake-up or re-check standing in for a regular probe may stretch one
    gap by up to half a re-check); a check drifts into its slot within about five intervals
    of a start or reload at the shipped 10 %; and the noise never accumulates (the old
    free-running jitter was a random walk that clumped a service's checks as often as it
    spread them). Jitter 0: no noise and no steering, every probe exactly one interval after
    the last (the phase of the first probe stays).
    """
    budget = check.interval * settings.jitter
    free = due + check.interval
    error = (anchor - free) % check.interval
    if error > check.interval / 2:
        error -= check.interval
    step = error + rng.uniform(-budget / 2, budget / 2)
    return free + min(budget, max(-budget, step))


class Scheduler:
    def __init__(
        self,
        checks: Iterable[CheckSpec],
        settings: Settings,
        probe: Probe,
        on_result: ResultSink,
        *,
        rng: random.Random | None = None,
        lag: Histogram | None = None,
    ) -> None:
        if not 0 <= settings.jitter < 1:  # the config checks it; steering needs it
            raise ValueError(f"jitter must be in [0, 1), not {settings.jitter}")
        self.checks = tuple(checks)
        self.settings = settings
        self._spread = startup_spread(len(self.checks))
        self._slots = phase_slots(self.checks)
        self._probe = probe
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self.lag = lag if lag is not None else Histogram(LAG_BUCKETS)
        self.in_flight = 0
        self._stopping = False
        self._wake: dict[tuple[str, str], asyncio.Event] = {}
        self._wake_at: dict[tuple[str, str], float] = {}
        self._last_start: dict[tuple[str, str], float] = {}

    def start(self) -> None:
        for check in self.checks:
            self._wake[check.key] = asyncio.Event()
            name = f"probe {check.service}/{check.name}"
            self._tasks.append(asyncio.create_task(self._loop(check), name=name))

    def wake(self, keys: Iterable[tuple[str, str]], min_gap: float) -> None:
        """Probe these checks now, or `min_gap` after their last start if that is later.

        Used to re-verify the vantage (control checks) the moment a Meta check first fails,
        so an uplink failure is recognised as ours before any Meta failure is confirmed.
        """
        now = _now()
        for key in keys:
            event = self._wake.get(key)
            if event is not None:
                self._wake_at[key] = max(now, self._last_start.get(key, 0.0) + min_gap)
                event.set()

    async def stop(self, grace: float = 5.0, rounds: int = 3) -> None:
        """Cancel every timer and in-flight probe; returns once they have all ended."""
        self._stopping = True
        pending = set(self._tasks)
        for _ in range(rounds):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=grace)
        if pending:  # a library swallowed every cancel: do not hang a reload or shutdown
            log.error("%d probes ignored cancellation; abandoning them", len(pending))
        self._tasks.clear()

    async def _sleep_until(self, check: CheckSpec, due: float) -> float:
        """Sleep until due or until woken; returns the due time actually used."""
        event = self._wake[check.key]
        while True:
            woken = self._wake_at.pop(check.key, None)
            if woken is not None and woken < due:
                due = woken
            remaining = due - _now()
            if remaining <= 0:
                return due
            event.clear()  # safe: a wake before this point was taken from _wake_at above
            # The due time sets the event too, rather than a timeout raising into the wait:
            # fewer objects per sleep for the cyclic collector to walk (docs/benchmarks.md).
            timer = asyncio.get_running_loop().call_later(remaining, event.set)
            try:
                await event.wait()
            finally:
                timer.cancel()

    async def _loop(self, check: CheckSpec) -> None:
        # Regular probes keep the check's cadence; a re-check or a wake-up is an extra probe
        # in between and moves nothing (when a failure woke a service's checks together,
        # they used to keep that one phase afterwards).
        now = _now()
        anchor = now + self._slots.get(check.key, 0.0) * check.interval
        regular = now + self._rng.uniform(0, min(self._spread, check.interval))
        recheck: float | None = None
        while not self._stopping:
            planned = regular if recheck is None else min(regular, recheck)
            due = await self._sleep_until(check, planned)
            async with self._limit:
                started = _now()
                self.lag.observe(max(0.0, started - due))
                self._last_start[check.key] = started
                self.in_flight += 1
                try:
                    result = await self._probe(check)
                finally:
                    self.in_flight -= 1
            streak = 0
            try:
                streak = self._on_result(check, result)
            except Exception:  # a bug downstream must not stop this check's timer
                log.exception("recording the result of %s/%s failed", check.service, check.name)
            now = _now()
            # Catch the cadence up past this probe: a regular probe that fell due while it
            # ran, or less than half a re-check after it started, is the one that just ran
            # (a slow wake-up does not put the check out of its slot, nor probe twice).
            stand_in = min(check.recheck_interval, check.interval) / 2
            behind = now - regular
            if behind > check.interval:  # a long stall: skip whole intervals at once
                regular += check.interval * math.floor(behind / check.interval)
            while regular <= max(started + stand_in, now):
                regular = steered_due(regular, check, anchor, self.settings, self._rng)
            # A failure (or slowness) not yet confirmed is re-checked after recheck_interval,
            # so an outage is confirmed in seconds.
            suspect = 0 < streak < self.settings.confirm_failures
            recheck = max(due + check.recheck_interval, now) if suspect else None


class LoopLagMonitor:
    """How late the event loop wakes a sleeper: a busy loop skews every probe's timing."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.lag = Histogram(LAG_BUCKETS)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event loop lag monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.period)
            self.lag.observe(max(0.0, time.monotonic() - start - self.period))
