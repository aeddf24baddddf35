"""The results store: per check, the latest result plus counters and histograms.

Owned by the event loop thread: the scheduler writes, the collector and the API read
between awaits, so no locks. Records survive a config reload when their (service, check)
key survives, so counters never reset just because the config was reloaded.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exporter.model import Phase, ProbeResult, Reason
from exporter.spec import CheckSpec

from .verdict import CheckState

# Phase latencies from sub-millisecond loopback up to a slow intercontinental TLS handshake.
PHASE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Cumulative-on-read histogram; observe() is O(log buckets)."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, cumulative count)] ending with +Inf, as exposition wants."""
        running, buckets = 0, []
        for bound, count in zip([*map(_le, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class CheckRecord:
    spec: CheckSpec
    last: ProbeResult | None = None
    consecutive_failures: int = 0
    consecutive_slow: int = 0
    probes_total: int = 0
    failures: Counter[Reason] = field(default_factory=Counter)
    phases: dict[Phase, Histogram] = field(default_factory=dict)

    # started_at of the first failure of the current streak (None while not failing), and
    # of the failure that confirmed it (the confirm_failures-th in a row).
    failing_since: float | None = None
    confirmed_at: float | None = None
    # The SLI: probes that counted toward the verdict (see Runtime._judge_pending).
    judged_total: int = 0
    judged_failures: int = 0
    # Whether its failure counts in the service's verdict now (meta_check_failing).
    counted_failing: bool = False
    # The last certificate expiry seen, kept while later probes fail before TLS (a DNS
    # outage must not blind the expiry alert).
    tls_expiry: float | None = None

    def record(self, result: ProbeResult, confirm: int, *, streak: bool = True) -> None:
        """Keep the result; `streak=False` (probed before the vantage settled) leaves the
        failure and slowness streaks as they are."""
        self.last = result
        self.probes_total += 1
        if result.tls_expiry is not None:
            self.tls_expiry = result.tls_expiry
        for phase, seconds in result.phases.items():
            histogram = self.phases.get(phase)
            if histogram is None:
                histogram = self.phases[phase] = Histogram(PHASE_BUCKETS)
            histogram.observe(seconds)
        if not result.success:
            self.failures[result.reason] += 1
        if not result.measured or not streak:
            return  # a blocked or crashed probe says nothing: streaks neither grow nor reset
        if result.success:
            slow_streak = self.consecutive_slow
            self.restart_streaks()
            if result.duration > self.spec.latency_threshold:
                self.consecutive_slow = slow_streak + 1
        else:
            if self.consecutive_failures == 0:
                self.failing_since = result.started_at
            self.consecutive_failures += 1
            if self.consecutive_failures >= confirm and self.confirmed_at is None:
                self.confirmed_at = result.started_at
            self.consecutive_slow = 0

    def restart_streaks(self) -> None:
        """Forget the failure and slowness streaks (the vantage settled: judge afresh)."""
        self.consecutive_failures = 0
        self.failing_since = None
        self.confirmed_at = None
        self.consecutive_slow = 0

    @property
    def suspect_streak(self) -> int:
        """Failures (or slow successes) in a row ending with the last result; 0 otherwise.

        The scheduler re-checks fast while 0 < streak < confirm_failures.
        """
        last = self.last
        if last is None or not last.measured:
            return 0
        return self.consecutive_slow if last.success else self.consecutive_failures

    def state(self) -> CheckState:
        return CheckState(
            self.last,
            self.consecutive_failures,
            self.consecutive_slow,
            self.failing_since,
            self.confirmed_at,
        )


class ResultStore:
    def __init__(self, checks: Iterable[CheckSpec] = ()) -> None:
        self.records: dict[tuple[str, str], CheckRecord] = {}
        self.sync(checks)

    def sync(self, checks: Iterable[CheckSpec]) -> None:
        """Match the records to a (new) set of checks, keeping history of the survivors."""
        wanted = {c.key: c for c in checks}
        for key in list(self.records):
            if key not in wanted:
                del self.records[key]
        for key, spec in wanted.items():
            record = self.records.get(key)
            if record is None:
                self.records[key] = CheckRecord(spec)
            elif record.spec != spec:
                record.spec = spec
                record.consecutive_slow = 0  # the threshold may have changed

    def record(
        self, key: tuple[str, str], result: ProbeResult, confirm: int, *, streak: bool = True
    ) -> CheckRecord | None:
        """None when the check was removed by a reload while its probe ran."""
        record = self.records.get(key)
        if record is not None:
            record.record(result, confirm, streak=streak)
        return record

    def states(
        self, keys: Iterable[tuple[str, str]] | None = None
    ) -> dict[tuple[str, str], CheckState]:
        """Every check's state, or only those of `keys` (one service's: a probe result must
        not cost O(all checks), see docs/benchmarks.md)."""
        if keys is None:
            return {key: record.state() for key, record in self.records.items()}
        records = self.records
        return {key: records[key].state() for key in keys if key in records}

    def all_ran(self) -> bool:
        return all(record.last is not None for record in self.records.values())
