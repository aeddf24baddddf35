"""Scenario (f) of the shipped-timing transitions (see test_transitions.py), in a lab whose
exporters probe the catalogue's HTTP/3 checks: UDP 443 silently dropped on the three
vantages' uplinks for 60 s, TCP fine (an office firewall that blocks QUIC). Every HTTP/3 probe
times out, Meta's and the HTTP/3 controls' alike; each vantage must say it blocks QUIC, no
Meta service may leave "up", and the real Prometheus and Alertmanager must page nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .promstack import QUIET_SECONDS, wait_async
from .test_transitions import (
    FAULT,
    failure_reasons,
    quiet_problems,
    record,
    summary,
    up,
    watched,
)
from .topology import SHIPPED, Lab

pytestmark = pytest.mark.root

LAB_VANTAGES = 3
LAB_SETTINGS = SHIPPED


async def test_f_quic_blocked_on_the_uplinks(
    lab: Lab, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    quic_blind: dict[int, bool] = {}

    def every_vantage_says_so() -> bool:
        for vantage in lab.vantages:
            quic_blind[vantage.index] = not lab.status(vantage.index)["vantage"]["quic_ok"]
        return all(quic_blind.values())

    async with watched(lab, tmp_path) as watch:
        before = await asyncio.to_thread(failure_reasons, lab)
        watch.mark("fault")
        lab.block_quic(True)
        # Both HTTP/3 controls time out and are re-checked (a timeout each): well inside
        # the fault, every vantage must say it blocks QUIC.
        said = await wait_async(every_vantage_says_so, FAULT, "every vantage QUIC-blind")
        await watch.until("fault", FAULT)
        reasons = await asyncio.to_thread(failure_reasons, lab) - before
        lab.block_quic(False)
        watch.mark("recovered")
        await watch.until("recovered", QUIET_SECONDS)
    figures: dict[str, Any] = {
        "recovery_seconds": watch.first("recovered", up),
        "quic_blind_after_seconds": said,
        "failure_reasons_during_fault": dict(reasons),
    }
    problems = quiet_problems(watch, figures)
    # The HTTP/3 probes time out (silence, not refusal); any other failure of a TCP probe
    # in the minute (a slow answer on two loaded cores) is allowed, a verdict on it is not.
    quic = {r for r in reasons if r.startswith("quic_")}
    if quic != {"quic_timeout"} or reasons["quic_timeout"] < sum(reasons.values()) / 2:
        problems.append(f"the HTTP/3 probes should have failed, with quic_timeout: {reasons}")
    figures["summary"] = summary(figures)
    record(record_property, f"f UDP 443 dropped {FAULT:.0f}s", figures, watch)
    assert not problems, "\n".join(problems)
