"""Egress policy decisions and the scheduler's pure timing rules."""

from __future__ import annotations

import asyncio
import random
import re

import pytest

from exporter.egress import LOOPBACK, EgressPolicy, PolicyViolation
from exporter.model import ProbeResult, Reason
from exporter.scheduler import Scheduler, next_delay
from exporter.spec import CheckSpec, Settings
from tests.conftest import make_check


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("157.240.1.35", False),
        ("2a03:2880:f10c:83:face:b00c:0:25de", False),
        ("::ffff:10.0.0.1", False),  # v4-mapped: judged as the IPv4 address it is
        ("::ffff:127.0.0.1", True),
        ("not-an-address", False),
    ],
)
def test_loopback_policy(address: str, allowed: bool) -> None:
    assert EgressPolicy.from_strings(LOOPBACK).permits(address) is allowed


def test_deny_wins_over_allow() -> None:
    policy = EgressPolicy.from_strings(["10.0.0.0/8"], ["10.9.0.0/16"])
    assert policy.permits("10.1.2.3") and not policy.permits("10.9.1.1")
    with pytest.raises(
        PolicyViolation, match=re.escape("resolver 10.9.1.1 is outside the egress policy")
    ):
        policy.require("10.9.1.1", "resolver")


def test_bad_network_is_named() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/99' is not a network")):
        EgressPolicy.from_strings(["10.0.0.0/99"])


def result(reason: Reason, duration: float = 0.01) -> ProbeResult:
    return ProbeResult(
        success=reason is Reason.OK, reason=reason, duration=duration, started_at=0.0
    )


CHECK = make_check(
    "tcp", host="127.0.0.1", port=1, interval=15.0, recheck_interval=2.0, latency_threshold=1.0
)
SETTINGS = Settings(confirm_failures=2, jitter=0.1, max_concurrency=4)


@pytest.mark.parametrize(
    ("reason", "duration", "suspect_in_row", "expected"),
    [
        (Reason.TCP_TIMEOUT, 0.5, 1, 2.0),  # first failure: fast re-check
        (Reason.TCP_TIMEOUT, 0.5, 2, None),  # confirmed: back to the interval
        (Reason.OK, 0.5, 0, None),
        (Reason.OK, 1.5, 1, 2.0),  # slow: confirmed as fast as a failure
        (Reason.OK, 1.5, 2, None),
        (Reason.BLOCKED_BY_POLICY, 0.0, 1, None),  # nothing to confirm: it never left the machine
    ],
)
def test_next_delay(
    reason: Reason, duration: float, suspect_in_row: int, expected: float | None
) -> None:
    delays = {
        next_delay(CHECK, result(reason, duration), suspect_in_row, SETTINGS, random.Random(i))
        for i in range(50)
    }
    if expected is not None:
        assert delays == {expected}
    else:
        assert all(13.5 <= d <= 16.5 for d in delays) and len(delays) > 1  # jittered around 15 s


async def test_scheduler_rechecks_fast_and_respects_concurrency() -> None:
    checks = [
        make_check(
            "tcp", name=f"c{i}", host="127.0.0.1", port=1, interval=30.0, recheck_interval=0.05
        )
        for i in range(6)
    ]
    seen: list[tuple[str, Reason]] = []
    running = 0
    peak = 0
    done = asyncio.Event()

    async def probe(check: CheckSpec) -> ProbeResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return result(Reason.TCP_REFUSED if check.name == "c0" else Reason.OK)

    def on_result(check: CheckSpec, res: ProbeResult) -> None:
        seen.append((check.name, res.reason))
        if sum(1 for name, _ in seen if name == "c0") == 2 and len(seen) >= 7:
            done.set()

    scheduler = Scheduler(checks, Settings(2, 0.1, 2), probe, on_result, rng=random.Random(1))
    scheduler.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        await scheduler.stop()
    assert peak <= 2
    # c0 failed, was re-checked once (fast), then waits its 30 s interval: exactly two probes.
    assert [r for name, r in seen if name == "c0"] == [Reason.TCP_REFUSED, Reason.TCP_REFUSED]
    assert {name for name, _ in seen} == {f"c{i}" for i in range(6)}
    assert scheduler.lag.count == len(seen)
