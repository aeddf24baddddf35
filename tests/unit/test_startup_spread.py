"""The scheduler spreads first probes over 1 s, and over a second per 100 checks beyond
that (capped by each check's interval): thousands of checks must not start, and then keep
returning, in one clump (bench: 2000 checks in 1 s held probes 1.8 s late)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from exporter.engine.scheduler import Scheduler, startup_spread
from exporter.model import ProbeResult, Reason
from exporter.spec import CheckSpec, Settings
from tests.conftest import make_check


@pytest.mark.parametrize(
    ("checks", "seconds"), [(0, 1.0), (37, 1.0), (100, 1.0), (300, 3.0), (2000, 20.0)]
)
def test_startup_spread(checks: int, seconds: float) -> None:
    assert startup_spread(checks) == seconds


async def test_three_hundred_checks_start_over_three_seconds() -> None:
    checks = [make_check("tcp", name=f"c{i}", host="127.0.0.1", port=1, interval=60.0)
              for i in range(300)]  # fmt: skip
    started: list[float] = []

    async def probe(_: CheckSpec) -> ProbeResult:
        started.append(time.monotonic())
        return ProbeResult(True, Reason.OK, 0.0, time.time())

    begin = time.monotonic()
    scheduler = Scheduler(
        checks, Settings(2, 0.0, 300), probe, lambda c, r: 0, rng=random.Random(7)
    )
    scheduler.start()
    try:
        await asyncio.sleep(1.2)
        by_then = len(started)
        while len(started) < len(checks) and time.monotonic() - begin < 10:
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    # With the old 1 s spread every check would have started by 1.2 s; now about 40 % have.
    assert 0.15 * len(checks) < by_then < 0.7 * len(checks)
    assert len(started) == len(checks)
    assert max(started) - begin > 2.0
