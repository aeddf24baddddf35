"""Egress policy decisions and the scheduler's pure timing rules."""

from __future__ import annotations

import asyncio
import itertools
import random
import re

import pytest

from exporter.egress import LOOPBACK, EgressPolicy, PolicyViolation
from exporter.engine.scheduler import Scheduler, phase_slots, steered_due
from exporter.engine.store import CheckRecord, ResultStore
from exporter.model import ProbeResult, Reason
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


def test_a_services_critical_checks_sit_evenly_apart_and_services_apart() -> None:
    checks = [
        make_check("tcp", name=name, service=service, host="127.0.0.1", port=1, critical=critical)
        for service, name, critical in [
            ("facebook", "dns", False),
            ("facebook", "web", True),
            ("facebook", "mobile", True),
            ("facebook", "graph", True),
            ("instagram", "web", True),
            ("instagram", "dns", False),
        ]
    ]
    slots = phase_slots(checks)
    critical = sorted(slots[("facebook", n)] for n in ("web", "mobile", "graph"))
    assert critical == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert slots[("facebook", "dns")] == pytest.approx(0.5)  # half its own spacing off
    assert slots[("instagram", "web")] == pytest.approx(0.618, abs=1e-3)
    assert slots[("instagram", "dns")] == pytest.approx(0.118, abs=1e-3)
    assert all(0 <= s < 1 for s in slots.values())


def gaps_and_phases(anchor: float, start: float, steps: int, seed: int) -> tuple[list, list]:
    rng, due, dues = random.Random(seed), start, [start]
    for _ in range(steps):
        due = steered_due(due, CHECK, anchor, SETTINGS, rng)
        dues.append(due)
    gaps = [b - a for a, b in itertools.pairwise(dues)]
    phases = [(d - anchor + 7.5) % 15.0 - 7.5 for d in dues]  # signed distance to the slot
    return gaps, phases


@pytest.mark.parametrize("seed", range(20))
def test_steering_reaches_the_slot_without_stretching_a_gap(seed: int) -> None:
    gaps, phases = gaps_and_phases(anchor=7.4, start=0.0, steps=200, seed=seed)
    assert all(13.5 - 1e-9 <= g <= 16.5 + 1e-9 for g in gaps)  # interval +/- jitter, always
    assert all(abs(p) <= 0.75 + 1e-9 for p in phases[6:])  # in its slot from the 6th step
    assert len({round(g, 6) for g in gaps}) > 100  # still jittered: no lockstep


def test_the_noise_does_not_accumulate() -> None:
    # The old jitter was a random walk: after 1,000 intervals a check sat anywhere.
    _, phases = gaps_and_phases(anchor=0.0, start=0.0, steps=1000, seed=3)
    assert max(abs(p) for p in phases) <= 0.75 + 1e-9


def test_no_jitter_keeps_an_exact_interval() -> None:
    rng = random.Random(1)
    assert steered_due(3.0, CHECK, 10.0, Settings(2, 0.0, 4), rng) == 18.0


def test_streaks_live_in_the_store_and_ignore_unmeasured_results() -> None:
    record = CheckRecord(CHECK)
    seen = []
    for reason, duration, started in [
        (Reason.TCP_TIMEOUT, 0.5, 10.0),
        (Reason.BLOCKED_BY_POLICY, 0.0, 11.0),  # measures nothing: the streak stands
        (Reason.INTERNAL_ERROR, 0.0, 12.0),
        (Reason.TCP_TIMEOUT, 0.5, 13.0),
        (Reason.OK, 1.5, 14.0),  # slow (threshold 1 s)
        (Reason.OK, 1.5, 15.0),
        (Reason.OK, 0.1, 16.0),
    ]:
        record.record(ProbeResult(reason is Reason.OK, reason, duration, started), confirm=2)
        seen.append((record.suspect_streak, record.consecutive_failures, record.confirmed_at))
    assert seen == [
        (1, 1, None),
        (0, 1, None),
        (0, 1, None),
        (2, 2, 13.0),  # confirmed by the failure started at 13.0
        (1, 0, None),
        (2, 0, None),
        (0, 0, None),
    ]
    assert record.failures == {
        Reason.TCP_TIMEOUT: 2,
        Reason.BLOCKED_BY_POLICY: 1,
        Reason.INTERNAL_ERROR: 1,
    }


def test_last_seen_certificate_expiry_survives_later_failures() -> None:
    record = CheckRecord(CHECK)
    record.record(ProbeResult(True, Reason.OK, 0.1, 1.0, tls_expiry=2e9), confirm=2)
    record.record(ProbeResult(False, Reason.DNS_SERVFAIL, 0.1, 2.0), confirm=2)
    assert record.tls_expiry == 2e9


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

    store = ResultStore(checks)

    def on_result(check: CheckSpec, res: ProbeResult) -> int:
        seen.append((check.name, res.reason))
        if sum(1 for name, _ in seen if name == "c0") == 2 and len(seen) >= 7:
            done.set()
        record = store.record(check.key, res, confirm=2)
        assert record is not None
        return record.suspect_streak

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


async def test_wake_probes_a_check_before_its_interval() -> None:
    checks = [make_check("tcp", name="slow_timer", host="127.0.0.1", port=1, interval=60.0)]
    probed = asyncio.Event()
    count = 0

    async def probe(check: CheckSpec) -> ProbeResult:
        nonlocal count
        count += 1
        if count == 2:
            probed.set()
        return result(Reason.OK)

    scheduler = Scheduler(checks, Settings(2, 0.0, 2), probe, lambda c, r: 0, rng=random.Random(1))
    scheduler.start()
    try:
        while count < 1:
            await asyncio.sleep(0.01)
        scheduler.wake([("facebook", "slow_timer")], min_gap=0.0)
        await asyncio.wait_for(probed.wait(), timeout=5)  # not 60 s
    finally:
        await scheduler.stop()


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "0.1.2.3", "::ffff:0.0.0.0"])
def test_this_host_addresses_are_never_targets(address: str) -> None:
    assert not EgressPolicy.from_strings(["0.0.0.0/0", "::/0"]).permits(address)


def test_ipv4_mapped_deny_network_matches_both_forms() -> None:
    policy = EgressPolicy.from_strings(["0.0.0.0/0", "::/0"], ["::ffff:10.0.0.0/104"])
    assert not policy.permits("10.0.0.1") and not policy.permits("::ffff:10.0.0.1")
    assert policy.permits("11.0.0.1")
