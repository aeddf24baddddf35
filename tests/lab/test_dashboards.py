"""Every dashboard query, its variables substituted, against a real Prometheus scraping the lab.

Grafana itself cannot be installed on these machines (Debian does not package it; Grafana's
own package repository is outside what they may reach), so Grafana is not what sends the
queries: tests/dashboards/model.py reproduces what it sends, and the lint test
(tests/dashboards/test_lint.py) holds the JSON to Grafana's model.
Prometheus 2.42 scrapes the lab's exporter every second over the management link and
evaluates alerts/meta-outage.rules.yml (the SLO dashboard reads its recordings).

Twice, while the lab is healthy and during the 4 Oct 2021 replay (Meta's DNS prefixes
withdrawn, every service down at dns), every target of every panel of the four dashboards
must be accepted by Prometheus's query API and return at least one series with a finite
value — instant targets (stat, table, bar gauge) at "now", range targets (time series, state
timeline) over the run so far, the dashboard's time range in the lab:

- Variables as Grafana sets them on first load: `label_values(...)` answered by Prometheus
  (each must offer values), multi-value ones on "All" (`.+`), single ones on their first
  value; the service detail for every service; panels repeated per check, once per check.
- $__interval 2 s (the range step), $__rate_interval 4 s (Grafana's max(4 x scrape interval,
  interval + scrape interval) at the lab's 1 s scrapes), $__range the run so far.

Panels whose data can be legitimately absent were designed to still show a series, without
`or vector(0)`-style fallbacks: probe outcomes count successes as reason "ok" next to the
failure reasons (probes minus failures), and the outage table counts, per service and
vantage, outages that may be 0 (changes() of the status series, which always exists). The
one exemption is derived from the exporter's own check list, not listed: the two DNS panels
of a service without a DNS check (the catalogue's Ads Manager, login and API services have
HTTP checks only). While healthy they must really be empty — no DNS answer, and a successful
lookup reports no rcode — so the exemption cannot hide a broken query. In the replay their
HTTP checks' lookups fail; those that get an answer (SERVFAIL) show its rcode, those that time
out (most, in the lab: the recursor's retries outlast the probe's deadline) show none, so
either is right there. Finally the replay must show the outage itself: 9 services down,
layer dns, "is it us?" no, an outage in every service's row, dns_servfail among the reasons.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dashboards.model import (
    LABEL_VALUES,
    Json,
    load,
    panels,
    regex_value,
    substitute,
    variables,
)

from .conftest import wait_until
from .promstack import Prometheus, missing_binaries
from .topology import META_DNS_PREFIXES, Lab

pytestmark = pytest.mark.root

SCRAPE = 1  # seconds: promstack's scrape and evaluation interval
STEP = 2  # the range queries' step: the panels' $__interval
RATE_INTERVAL = max(4 * SCRAPE, STEP + SCRAPE)
META_SERVICES = 9
DNS_PANELS = {"DNS answer records", "DNS response codes"}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool
    service: str | None  # the service detail's $service


@dataclass(frozen=True)
class Outcome:
    query: Query
    series: list[dict[str, Any]]

    @property
    def has_data(self) -> bool:
        return any(math.isfinite(v) for s in self.series for v in values(s))


def values(series: dict[str, Any]) -> list[float]:
    points = [series["value"]] if "value" in series else series["values"]
    return [float(v) for _, v in points]


def builtins(start: float, now: float) -> dict[str, str]:
    span = max(1, math.ceil(now - start))
    return {
        "datasource": "prometheus",
        "__interval": f"{STEP}s",
        "__interval_ms": str(STEP * 1000),
        "__rate_interval": f"{RATE_INTERVAL}s",
        "__range": f"{span}s",
        "__range_s": str(span),
        "__range_ms": str(span * 1000),
    }


def options(prom: Prometheus, variable: Json, chosen: dict[str, str], start: float) -> list[str]:
    """A label_values() variable's options, as Grafana asks Prometheus for them."""
    match = LABEL_VALUES.match(substitute(variable["query"]["query"], chosen))
    assert match, variable["query"]
    params = {"match[]": match["selector"], "start": str(start), "end": str(time.time())}
    found = sorted(prom.api(f"label/{match['label']}/values", params))
    assert found, f"variable {variable['name']} offers no value: {match['selector']}"
    return found


def selections(
    prom: Prometheus, dashboard: Json, start: float
) -> Iterator[tuple[dict[str, str], dict[str, list[str]]]]:
    """Grafana's first load (multi -> All, single -> first option), every $service."""
    chosen: list[tuple[dict[str, str], dict[str, list[str]]]] = [(builtins(start, time.time()), {})]
    for variable in variables(dashboard)[1:]:
        name, following = variable["name"], []
        for values_, offered in chosen:
            found = options(prom, variable, values_, start)
            if variable["multi"]:
                picks = [variable["allValue"]]
            else:  # the service detail, for every service; other single ones: the first
                picks = found if name == "service" else found[:1]
            following += [({**values_, name: p}, {**offered, name: found}) for p in picks]
        chosen = following
    yield from chosen


def queries(prom: Prometheus, start: float) -> list[Query]:
    out = []
    for file, dashboard in load().items():
        for chosen, offered in selections(prom, dashboard, start):
            for panel in panels(dashboard):
                repeat = panel.get("repeat")
                runs = (
                    [{**chosen, repeat: regex_value([v])} for v in offered[repeat]]
                    if repeat
                    else [chosen]
                )
                for values_, target in itertools.product(runs, panel["targets"]):
                    out.append(
                        Query(
                            file,
                            substitute(panel["title"], values_),
                            target["refId"],
                            substitute(target["expr"], values_),
                            target["instant"],
                            values_.get("service"),
                        )
                    )
    return out


def run(prom: Prometheus, query: Query, start: float, now: float) -> Outcome:
    if query.instant:
        data = prom.api("query", {"query": query.expr, "time": str(now)})
    else:
        params = {"query": query.expr, "start": str(start), "end": str(now), "step": str(STEP)}
        data = prom.api("query_range", params)
    return Outcome(query, data["result"])


def check_every_panel(prom: Prometheus, start: float, lab: Lab, phase: str) -> list[Outcome]:
    """Run every query; all accepted, all with data except the derived DNS exemption."""
    with_dns = {
        s["name"] for s in lab.status()["services"] if any(c["kind"] == "dns" for c in s["checks"])
    }
    now = time.time()
    outcomes = [run(prom, q, start, now) for q in queries(prom, start)]
    problems = []
    for outcome in outcomes:
        q = outcome.query
        if q.panel in DNS_PANELS and q.service not in with_dns:
            if phase == "healthy" and outcome.has_data:
                problems.append(f"{q} shows data for a service without a DNS check")
        elif not outcome.has_data:
            problems.append(f"empty: {q}")
    assert not problems, f"{phase}: {len(problems)} of {len(outcomes)}:\n" + "\n".join(problems)
    return outcomes


def pick(
    outcomes: list[Outcome], panel: str, ref: str = "A", service: str | None = None
) -> list[Any]:
    """The one result of a panel's target (for the service detail: of one $service)."""
    found = [
        o.series
        for o in outcomes
        if (o.query.panel, o.query.ref) == (panel, ref) and service in (None, o.query.service)
    ]
    assert len(found) == 1, (panel, ref, service, len(found))
    return found[0]


def last(series: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): values(s)[-1] for s in series}


def prometheus_sees(prom: Prometheus, expr: str, expected: float) -> bool:
    result = prom.query(expr)
    return bool(result) and float(result[0]["value"][1]) == expected


@pytest.fixture
def prometheus(lab: Lab, tmp_path: Path) -> Iterator[Prometheus]:
    if (why := missing_binaries()) is not None:
        pytest.skip(why)
    lab.heal()
    target = lab.exporter_url.removeprefix("http://")
    server = Prometheus("prometheus", tmp_path / "prom", targets=[target], rules=True).start()
    try:
        yield server
    finally:
        server.stop()


def test_every_panel_has_data_healthy_and_during_2021_replay(
    lab: Lab, prometheus: Prometheus
) -> None:
    prom, start = prometheus, time.time()
    # Healthy: every service up, the SLO recordings evaluated, a few rate windows of history.
    wait_until(
        lambda: prometheus_sees(
            prom, 'count(meta_service_status{status="up"} == 1)', META_SERVICES
        ),
        60,
        "every service up in Prometheus",
        step=0.5,
    )
    wait_until(
        lambda: prometheus_sees(prom, "count(meta_service:error:ratio_rate1h)", META_SERVICES),
        30,
        "the SLO recording rules",
        step=0.5,
    )
    wait_until(lambda: time.time() - start > 3 * RATE_INTERVAL, 30, "some history", step=0.5)
    healthy = check_every_panel(prom, start, lab, "healthy")
    assert last(pick(healthy, "Services down"), "") == {"": 0}
    assert set(last(pick(healthy, "Is it us?"), "instance").values()) == {1}
    assert set(last(pick(healthy, "Outages in the time range"), "service").values()) == {0}

    # 4 Oct 2021: Meta's nameserver prefixes withdrawn; caches expire; everything down at dns.
    lab.withdraw(*META_DNS_PREFIXES)
    wait_until(
        lambda: prometheus_sees(prom, 'sum(meta_service_status{status="down"})', META_SERVICES),
        60,
        "every service down in Prometheus",
        step=0.5,
    )
    # Facebook's own (the panel below is the facebook service's): a new counter series first
    # shows at 1, so a rate needs a second SERVFAIL in the window; then one more range step,
    # so the panel's last point is past it.
    servfails = 'meta_probe_failures_total{service="facebook",reason="dns_servfail"}'
    wait_until(
        lambda: bool(prom.query(f"rate({servfails}[{RATE_INTERVAL}s]) > 0")),
        20,
        "facebook's SERVFAILs within a rate window",
        step=0.5,
    )
    time.sleep(STEP)
    replay = check_every_panel(prom, start, lab, "2021 replay")
    assert last(pick(replay, "Services down"), "") == {"": META_SERVICES}
    assert set(last(pick(replay, "Is it us?"), "instance").values()) == {1}  # "NO": Meta
    layers = last(pick(replay, "Failing layer and since when", "B"), "service")
    assert len(layers) == META_SERVICES and set(layers.values()) == {2}  # dns
    outages = last(pick(replay, "Outages in the time range"), "service")
    assert len(outages) == META_SERVICES and min(outages.values()) >= 1
    reasons = pick(replay, "Probe outcomes by reason", service="facebook")
    servfail = [s for s in reasons if s["metric"]["reason"] == "dns_servfail"]
    assert servfail and max(max(values(s)) for s in servfail) > 0
