"""The scheduler keeps each check in its slot of the interval (issue 16): a service's critical
checks evenly apart, so a front-end outage meets one of them within interval/k; a wake-up or
a re-check is an extra probe that moves no slot. Run on virtual time (tests/unit/virtual_time):
ten minutes of probing at the shipped 15 s / 10 % jitter in milliseconds, exactly replayable.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable

import pytest

from exporter.engine.scheduler import Scheduler
from exporter.model import ProbeResult, Reason
from exporter.spec import CheckSpec, Settings
from tests.conftest import make_check
from tests.unit.virtual_time import VirtualClock, VirtualTimeLoop

INTERVAL = 15.0
SETTINGS = Settings(confirm_failures=2, jitter=0.1, max_concurrency=32)
CRITICAL = ("web", "mobile_web", "graph_api")
CHECKS = [
    make_check(
        "tcp",
        name=name,
        host="127.0.0.1",
        port=1,
        interval=INTERVAL,
        recheck_interval=2.0,
        critical=name in CRITICAL,
    )
    for name in (*CRITICAL, "dns", "auth_dns")
]
Starts = dict[str, list[float]]


def run(
    seconds: float,
    *,
    fails: Callable[[str, float], bool] = lambda name, at: False,
    slow: Callable[[str, float], bool] = lambda name, at: False,
    wake_at: tuple[float, ...] = (),
    seed: int = 1,
) -> Starts:
    """Probe CHECKS for `seconds` of virtual time; every probe's start, by check name.
    Probes pass at once unless `fails` (at once) or `slow` (passing after 5 s) says so."""
    clock = VirtualClock(1000.0)
    loop = VirtualTimeLoop(clock)
    starts: Starts = {check.name: [] for check in CHECKS}
    streaks = dict.fromkeys(starts, 0)

    async def probe(check: CheckSpec) -> ProbeResult:
        at = clock.now - 1000.0
        starts[check.name].append(at)
        if slow(check.name, at):
            await asyncio.sleep(5.0)
        ok = not fails(check.name, at)
        return ProbeResult(ok, Reason.OK if ok else Reason.HTTP_STATUS, 0.05, clock.now)

    def on_result(check: CheckSpec, result: ProbeResult) -> int:
        streaks[check.name] = 0 if result.success else streaks[check.name] + 1
        return streaks[check.name]

    async def main() -> None:
        scheduler = Scheduler(CHECKS, SETTINGS, probe, on_result, rng=random.Random(seed))
        scheduler.start()
        elapsed = 0.0
        for moment in wake_at:
            await asyncio.sleep(moment - elapsed)
            elapsed = moment
            scheduler.wake([c.key for c in CHECKS if c.critical], min_gap=0.0)
        await asyncio.sleep(seconds - elapsed)
        await scheduler.stop()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return starts


def phase(at: float, reference: float) -> float:
    """Where `at` sits in the interval after `reference`, in [0, INTERVAL)."""
    return (at - reference) % INTERVAL


def critical_phases(starts: Starts, after: float) -> list[list[float]]:
    """For each regular round of `web` after `after`: the other critical checks' phases."""
    rounds = []
    for at in (t for t in starts["web"] if t > after):
        others = []
        for name in CRITICAL[1:]:
            nearest = min(starts[name], key=lambda t, at=at: abs(t - at - INTERVAL / 2))
            others.append(phase(nearest, at))
        rounds.append(sorted(others))
    return rounds


def test_first_probes_come_within_the_startup_spread() -> None:
    starts = run(5.0)
    assert all(len(times) == 1 and times[0] <= 1.0 for times in starts.values())


def test_critical_checks_drift_apart_and_stay_a_third_of_the_interval_apart() -> None:
    for seed in range(5):
        starts = run(600.0, seed=seed)
        for others in critical_phases(starts, after=120.0)[:-1]:
            assert abs(others[0] - 5.0) <= 1.5 and abs(others[1] - 10.0) <= 1.5, (seed, others)


def test_gaps_stay_within_interval_plus_minus_jitter() -> None:
    starts = run(600.0, seed=2)
    for name, times in starts.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps and all(13.5 - 1e-6 <= g <= 16.5 + 1e-6 for g in gaps), name


def test_a_wake_up_is_an_extra_probe_that_moves_no_slot() -> None:
    quiet = run(600.0, seed=3)
    # A moment with no regular probe in the second after it (a wake-up just before a
    # regular probe stands for it, by design).
    moment = next(
        m
        for m in range(300, 320)
        if not any(m <= t <= m + 1.0 for name in CRITICAL for t in quiet[name])
    )
    woken = run(600.0, seed=3, wake_at=(float(moment),))
    for name in CRITICAL:
        # The wake-up itself, and every regular probe exactly where it was. (The old
        # scheduler re-based each woken check's cadence on the wake-up: all three then kept
        # one phase, and the next outage met them all at once.)
        assert [t for t in woken[name] if t != moment] == quiet[name], name
        assert moment in woken[name]


def test_a_failure_is_rechecked_then_the_check_returns_to_its_slot() -> None:
    outage = (400.0, 430.0)
    quiet = run(600.0, seed=4)
    failing = run(
        600.0, seed=4, fails=lambda name, at: name == "web" and outage[0] <= at < outage[1]
    )
    first_failure = next(t for t in failing["web"] if t >= outage[0])
    assert near(first_failure + 2.0, failing["web"])  # the fast re-check
    later = [t for t in quiet["web"] if t > outage[1] + INTERVAL]
    assert later and all(near(t, failing["web"]) for t in later)  # same slot afterwards


def near(moment: float, times: list[float]) -> bool:
    return any(abs(moment - t) < 1e-6 for t in times)


def regular_after(starts: Starts, name: str, moment: float) -> float:
    return next(t for t in starts[name] if t > moment)


def test_a_wake_up_just_before_a_regular_probe_stands_for_it() -> None:
    quiet = run(600.0, seed=5)
    regular = regular_after(quiet, "web", 300.0)
    woken = run(600.0, seed=5, wake_at=(regular - 0.5,))
    around = [t for t in woken["web"] if regular - 1.0 <= t <= regular + 5.0]
    assert around == [pytest.approx(regular - 0.5)]  # not probed again half a second later
    for others in critical_phases(woken, after=regular + INTERVAL):
        assert abs(others[0] - 5.0) <= 1.5 and abs(others[1] - 10.0) <= 1.5  # still in slot


def test_a_slow_wake_up_neither_probes_twice_nor_leaves_its_slot() -> None:
    # The wake-up comes 1.5 s before web's regular probe and takes 5 s: the regular that
    # fell due meanwhile is the probe that ran, not a second one the moment it returns.
    quiet = run(600.0, seed=6)
    regular = regular_after(quiet, "web", 300.0)
    moment = regular - 1.5
    woken = run(
        600.0,
        seed=6,
        wake_at=(moment,),
        slow=lambda name, at: name == "web" and moment <= at < moment + 1.0,
    )
    after = [t for t in woken["web"] if t > moment]
    assert after[0] == pytest.approx(regular + INTERVAL, abs=1.5)  # the next regular one
    for others in critical_phases(woken, after=moment + INTERVAL):
        assert abs(others[0] - 5.0) <= 1.5 and abs(others[1] - 10.0) <= 1.5
