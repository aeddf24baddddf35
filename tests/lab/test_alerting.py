"""Alerting end to end: the lab's exporters, real Prometheus, real Alertmanager, a webhook.

The shipped rules (alerts/meta-outage.rules.yml) and the shipped Alertmanager config (only
its receivers pointed at a local webhook) run unchanged; Prometheus scrapes and evaluates
every second, at the lab's fast probe intervals.

- 4 Oct 2021 replayed: exactly one critical notification group, and its resolution.
- 5 % loss, and this vantage's uplink down: no page.
- Three regions, each with its own Prometheus remote-writing into a global one that
  evaluates the rules: one region's uplink down pages nothing; Meta down as seen from 2 of
  3 regions pages.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from .promstack import (
    QUIET_SECONDS,
    Prometheus,
    alerting_stack,
    missing_binaries,
    wait_async,
)
from .topology import META_DNS_PREFIXES, Lab

pytestmark = pytest.mark.root

LAB_VANTAGES = 3


@pytest.fixture(autouse=True)
def healed(lab: Lab) -> None:
    if (why := missing_binaries()) is not None:
        pytest.skip(why)
    lab.heal()


async def test_october_2021_pages_once_and_resolves(lab: Lab, tmp_path: Path) -> None:
    async with alerting_stack(lab, tmp_path, regions=1) as stack:
        injected = time.monotonic()
        lab.withdraw(*META_DNS_PREFIXES)
        await stack.hook.wait_for(1, timeout=60, receiver="pager")
        page_after = stack.pages()[0].received_at - injected
        # Let every service go down and every alert fire; pages must stay one group.
        await wait_async(
            lambda: len(stack.evaluator.query('meta_service_status{status="down"} == 1')) == 9,
            30,
            "every service down",
        )
        # The one page group is updated (group_interval) until it carries the widespread
        # outage, which mutes the per-service alerts inside it.
        await stack.hook.wait_for(
            1,
            timeout=90,
            receiver="pager",
            predicate=lambda n: "MetaWidespreadOutage" in n.alertnames,
        )
        last = [n for n in stack.pages() if n.status == "firing"][-1]
        assert last.alertnames == ["MetaWidespreadOutage"], stack.hook.describe()
        groups = stack.page_groups()
        assert groups == {(("severity", "critical"),)}, f"one page group: {stack.hook.describe()}"
        lab.restore(*META_DNS_PREFIXES)
        await stack.hook.wait_for(
            1, timeout=90, receiver="pager", predicate=lambda n: n.status == "resolved"
        )
        assert stack.page_groups("resolved") == {(("severity", "critical"),)}
        print(f"2021 replay: paged {page_after:.1f}s after the withdrawal")


async def test_five_percent_loss_pages_nothing(lab: Lab, tmp_path: Path) -> None:
    async with alerting_stack(lab, tmp_path, regions=1) as stack:
        lab.loss(5)
        await asyncio.sleep(QUIET_SECONDS)
        print(f"5 % loss: {error_ratios(stack.evaluator, QUIET_SECONDS)}")
        assert stack.pages() == [], stack.hook.describe()


def error_ratios(prometheus: Prometheus, seconds: int) -> str:
    """The SLI's error ratio (judged probes) beside every probe's, worst service, over
    the window: how much of the loss the SLI sees (the raw one also holds our blips)."""
    window = f"[{seconds}s]"
    judged = (
        f"max(sum by (service) (increase(meta_probe_judged_failures_total{window}))"
        f" / sum by (service) (increase(meta_probes_judged_total{window})))"
    )
    every = (
        'max(sum by (service) (increase(meta_probe_failures_total{service!="control"}'
        f'{window})) / sum by (service) (increase(meta_probes_total{{service!="control"}}'
        f"{window})))"
    )

    def peak(series: str) -> str:
        return f"max_over_time(max({series})[{seconds}s:5s])"

    exprs = {
        "judged": judged,
        "every probe": every,
        "30m peak": peak("meta_service:error:ratio_rate30m"),
        "our own 30m peak": peak("meta:control_error:ratio_rate30m"),
        "30m above our own, peak": peak("meta_service:excess_error:ratio_rate30m"),
    }
    values = {
        name: float(rows[0]["value"][1]) if (rows := prometheus.query(expr)) else float("nan")
        for name, expr in exprs.items()
    }
    return ", ".join(f"{name} {value:.2%}" for name, value in values.items())


async def test_vantage_offline_pages_nothing(lab: Lab, tmp_path: Path) -> None:
    async with alerting_stack(lab, tmp_path, regions=1) as stack:
        lab.uplink(False, vantage=0)
        await asyncio.sleep(QUIET_SECONDS)
        assert stack.pages() == [], stack.hook.describe()
        firing = stack.evaluator.firing()
        assert not firing & {"MetaServiceDown", "MetaWidespreadOutage"}, firing


async def test_three_regions_one_uplink_down_pages_nothing(lab: Lab, tmp_path: Path) -> None:
    async with alerting_stack(lab, tmp_path, regions=3) as stack:
        lab.uplink(False, vantage=2)
        await asyncio.sleep(QUIET_SECONDS)
        assert stack.pages() == [], stack.hook.describe()
        assert stack.evaluator.query("meta:vantages_healthy:count")[0]["value"][1] == "2"


async def test_three_regions_meta_down_from_two_pages(lab: Lab, tmp_path: Path) -> None:
    async with alerting_stack(lab, tmp_path, regions=3) as stack:
        lab.cut_meta_for(0, 1)
        await stack.hook.wait_for(1, timeout=60, receiver="pager")
        await asyncio.sleep(10)
        assert stack.page_groups() == {(("severity", "critical"),)}, stack.hook.describe()
        down = stack.evaluator.query("meta_service:vantages_down:count")
        assert {d["value"][1] for d in down} == {"2"}
