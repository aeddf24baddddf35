"""Background probing: one timer per check, jitter, fast re-check on failure, bounded concurrency.

Probing runs on its own clock, not on scrapes (unlike the Prometheus "writing exporters"
advice, on purpose): detection does not wait for a scrape, a failure is re-checked within
seconds, and counters and histograms see every probe. The scheduler measures how late each
probe starts (queueing behind the concurrency limit, or a busy event loop).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

from .model import ProbeResult
from .spec import CheckSpec, Settings
from .store import Histogram

log = logging.getLogger(__name__)

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Spread the first probes over this much time so a restart does not fire them all at once.
STARTUP_SPREAD = 1.0

Probe = Callable[[CheckSpec], Awaitable[ProbeResult]]
ResultSink = Callable[[CheckSpec, ProbeResult], None]


def is_suspect(check: CheckSpec, result: ProbeResult) -> bool:
    """A result worth confirming at once: a measured failure, or a success over the threshold."""
    if result.success:
        return result.duration > check.latency_threshold
    return result.measured


def next_delay(
    check: CheckSpec,
    result: ProbeResult,
    suspect_in_row: int,
    settings: Settings,
    rng: random.Random,
) -> float:
    """Pure: seconds until the next probe of this check.

    A failure (or slowness) not yet confirmed is re-checked after recheck_interval, so an
    outage is confirmed in seconds; everything else waits the interval, +/- jitter so that
    many checks do not stay in lockstep.
    """
    if is_suspect(check, result) and suspect_in_row < settings.confirm_failures:
        return check.recheck_interval
    spread = check.interval * settings.jitter
    return max(0.0, check.interval + rng.uniform(-spread, spread))


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
        self.checks = tuple(checks)
        self.settings = settings
        self._probe = probe
        self._on_result = on_result
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self.lag = lag if lag is not None else Histogram(LAG_BUCKETS)
        self.in_flight = 0
        self._stopping = False

    def start(self) -> None:
        for check in self.checks:
            name = f"probe {check.service}/{check.name}"
            self._tasks.append(asyncio.create_task(self._loop(check), name=name))

    async def stop(self, grace: float = 5.0) -> None:
        """Cancel every timer and in-flight probe; returns once they have all ended."""
        self._stopping = True
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=grace)
            if pending:  # a library swallowed the cancel: say so, and cancel again
                log.warning(
                    "%d probes did not stop within %.0fs; cancelling again", len(pending), grace
                )
        self._tasks.clear()

    async def _loop(self, check: CheckSpec) -> None:
        due = time.monotonic() + self._rng.uniform(0, min(STARTUP_SPREAD, check.interval))
        suspect_in_row = 0
        while not self._stopping:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            async with self._limit:
                self.lag.observe(max(0.0, time.monotonic() - due))
                self.in_flight += 1
                try:
                    result = await self._probe(check)
                finally:
                    self.in_flight -= 1
            suspect_in_row = suspect_in_row + 1 if is_suspect(check, result) else 0
            try:
                self._on_result(check, result)
            except Exception:  # a bug downstream must not stop this check's timer
                log.exception("recording the result of %s/%s failed", check.service, check.name)
            # Keep the cadence from the due time; after a long stall, start afresh from now.
            due = max(
                due + next_delay(check, result, suspect_in_row, self.settings, self._rng),
                time.monotonic(),
            )


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
