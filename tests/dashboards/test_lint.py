"""Conventions every dashboard file (dashboards/*.json) must keep, checked offline.

Grafana itself cannot be installed on these machines (Debian does not package it; Grafana's
own package repository is outside what they may reach), so nothing here renders a dashboard.
Instead the JSON is held to Grafana's classic dashboard model (schemaVersion 38, read as-is by
Grafana 10.0 and migrated forward by later versions): the fields Grafana's import needs, panel
types and options it knows, unit ids from its unit registry, grid positions on its 24-column
grid. Every query's syntax is checked by the real promtool; tests/lab/test_dashboards.py runs
every query against a real Prometheus.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import promql, slo
from exporter.model import Layer, Status
from exporter.web.metrics import METRICS

from .model import (
    DIRECTORY,
    GRAFANA_BUILTINS,
    LABEL_VALUES,
    REPO,
    UIDS,
    Json,
    load,
    panels,
    referenced,
    substitute,
    variables,
)
from .promql_scan import RATE_FUNCTIONS, rate_calls, selectors

DASHBOARDS = load()
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RULES = REPO / "alerts" / "meta-outage.rules.yml"
SCHEMA_VERSION = 38
GRID = 24
PANEL_TYPES = {"stat", "timeseries", "state-timeline", "table", "bargauge"}
INSTANT_TYPES = {"stat", "table", "bargauge"}  # reduce to one value: instant queries
# Unit ids from Grafana's unit registry (packages/grafana-data/src/valueFormats/categories.ts)
# that these dashboards may use; "suffix:" units are Grafana's custom-unit syntax.
UNITS = {
    "none",
    "short",
    "percentunit",
    "s",
    "ms",
    "dtdurations",
    "dateTimeFromNow",
    "dateTimeAsIso",
    "bytes",
    "ops",
}
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROCESS_SERIES = {"process_cpu_seconds_total", "process_resident_memory_bytes"}


def known_series() -> tuple[set[str], set[str]]:
    """(every series name a query may use, the counters among them)."""
    names, counters = set(PROMETHEUS_SERIES | PROCESS_SERIES), {"process_cpu_seconds_total"}
    for doc in METRICS:
        if doc.type == "histogram":
            parts = {f"{doc.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
            names |= parts
            counters |= parts
        else:
            names.add(doc.name)
            if doc.type == "counter":
                counters.add(doc.name)
    rules = yaml.safe_load(RULES.read_text())
    names |= {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return names, counters


SERIES, COUNTERS = known_series()


def every(name: str) -> list[tuple[Json, Json]]:
    """(panel, target) pairs of one dashboard."""
    return [(p, t) for p in panels(DASHBOARDS[name]) for t in p["targets"]]


def walk(node: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in the JSON."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [
            x for v in node.values() for x in walk(v, key)
        ]
    if isinstance(node, list):
        return [x for v in node for x in walk(v, key)]
    return []


parametrize = pytest.mark.parametrize("name", sorted(UIDS))


def test_the_four_dashboards_and_nothing_else() -> None:
    assert set(DASHBOARDS) == set(UIDS)


@parametrize
def test_dashboard_model(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert dashboard["uid"] == UIDS[name]  # stable: links and bookmarks use it
    assert dashboard["editable"] is False
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["id"] is None  # Grafana assigns ids on import
    assert dashboard["title"].startswith("Meta outage: ")
    assert dashboard["description"]
    assert "meta-outage" in dashboard["tags"]
    assert set(dashboard["time"]) == {"from", "to"} and dashboard["time"]["to"] == "now"
    assert isinstance(dashboard["version"], int)
    assert isinstance(dashboard["annotations"]["list"], list)
    assert isinstance(dashboard["templating"]["list"], list)
    assert re.fullmatch(r"\d+[smhd]", dashboard["refresh"])


@parametrize
def test_datasource_is_a_variable_never_a_uid(name: str) -> None:
    dashboard = DASHBOARDS[name]
    sources = [v for v in variables(dashboard) if v["type"] == "datasource"]
    assert [(v["name"], v["query"]) for v in sources] == [("datasource", "prometheus")]
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in variables(dashboard):
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    # No hard-coded datasource uid anywhere; the only uid is the dashboard's own.
    uids = walk(dashboard, "uid")
    assert sorted(uids) == sorted([UIDS[name], *["${datasource}"] * (len(uids) - 1)])


@parametrize
def test_every_panel_has_title_description_unit(name: str) -> None:
    for panel in panels(DASHBOARDS[name]):
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["title"].strip(), panel
        assert len(panel["description"]) >= 30, panel["title"]
        unit = panel["fieldConfig"]["defaults"]["unit"]
        assert unit in UNITS or unit.startswith("suffix:"), (panel["title"], unit)
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, (panel["title"], prop)
        assert isinstance(panel["options"], dict)
        assert isinstance(panel["fieldConfig"]["defaults"]["mappings"], list)
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None and all(
            isinstance(s["value"], int | float) for s in steps[1:]
        )


@parametrize
def test_grid_layout(name: str) -> None:
    """Grafana's 24-column grid: positions in range, no two panels overlapping, unique ids."""
    dashboard = DASHBOARDS[name]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in pos.values())
        assert pos["x"] >= 0 and pos["w"] >= 1 and pos["x"] + pos["w"] <= GRID, panel["title"]
        if panel["type"] == "row":
            assert (pos["x"], pos["w"], pos["h"]) == (0, GRID, 1)
            assert panel["collapsed"] is False and panel["panels"] == [] and panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@parametrize
def test_targets(name: str) -> None:
    for panel in panels(DASHBOARDS[name]):
        targets = panel["targets"]
        assert targets, panel["title"]
        assert [t["refId"] for t in targets] == [chr(ord("A") + i) for i in range(len(targets))]
        for target in targets:
            assert target["expr"].strip() and target["datasource"] == DATASOURCE
            instant = panel["type"] in INSTANT_TYPES
            assert (target["instant"], target["range"]) == (instant, not instant), panel["title"]
            assert target["format"] == ("table" if panel["type"] == "table" else "time_series")


@parametrize
def test_queries_follow_the_conventions(name: str) -> None:
    """Known series only; counters only inside rate/increase over $__rate_interval; raw series
    scoped to the job and instance variables (recorded series have no job or instance)."""
    dashboard = DASHBOARDS[name]
    defined = {v["name"] for v in variables(dashboard)}
    scoped = {"job", "instance"} <= defined
    for panel, target in every(name):
        expr, title = target["expr"], panel["title"]
        assert referenced(expr) <= defined | GRAFANA_BUILTINS, (title, expr)
        found = selectors(expr)
        assert found, (title, expr)
        for sel in found:
            assert sel.metric in SERIES, (title, sel.metric)
            if sel.metric in COUNTERS:
                assert sel.function in RATE_FUNCTIONS, (title, sel)
            if sel.function in RATE_FUNCTIONS:
                assert sel.range == "[$__rate_interval]", (title, sel)
            recorded = ":" in sel.metric
            if scoped and not recorded:
                assert sel.has("job", "=~", "$job"), (title, sel)
                assert sel.has("instance", "=~", "$instance"), (title, sel)
            if recorded:
                assert not any(label in ("job", "instance") for label, *_ in sel.matchers)
        inside_rates = [s for s in found if s.function in RATE_FUNCTIONS]
        assert rate_calls(expr) == len(inside_rates), (title, expr)


@parametrize
def test_template_variables(name: str) -> None:
    dashboard = DASHBOARDS[name]
    names = [v["name"] for v in variables(dashboard)]
    assert names[0] == "datasource" and len(names) == len(set(names))
    assert {"job", "instance"} <= set(names), "every dashboard selects job and vantage"
    seen = {"datasource"}
    for variable in variables(dashboard)[1:]:
        assert variable["type"] == "query" and variable["refresh"] in (1, 2)
        query = variable["query"]["query"]
        assert variable["definition"] == query and variable["query"]["refId"]
        match = LABEL_VALUES.match(query)
        assert match, query
        for sel in selectors(match["selector"]):
            assert sel.metric in SERIES, query
        assert referenced(query) <= seen, f"{variable['name']} uses a later variable"
        assert variable["multi"] == variable["includeAll"]
        if variable["multi"]:
            assert variable["allValue"] == ".+"
        seen.add(variable["name"])
    for panel in panels(dashboard):
        if "repeat" in panel:
            repeated = next(v for v in variables(dashboard) if v["name"] == panel["repeat"])
            assert repeated["multi"], panel["title"]
            assert f"${panel['repeat']}" in panel["title"]


def test_state_codes_match_the_exporter() -> None:
    """The tiles' codes cover exactly the exporter's statuses and layers, and the rcode
    mapping names rcodes as dnspython does."""
    import dns.rcode

    assert [s for s, *_ in promql.STATUSES] == [s.value for s in Status]
    assert [s for s, *_ in promql.LAYERS] == [s.value for s in Layer]
    for states in (promql.STATUSES, promql.LAYERS):
        assert len({code for _, code, *_ in states}) == len(states)
    for number, text, _ in promql.RCODES:
        assert dns.rcode.to_text(dns.rcode.Rcode(number)) == text


def test_slo_objective_matches_the_rules() -> None:
    rules = RULES.read_text()
    assert f"* {slo.BUDGET}" in rules, "the dashboard's budget differs from the burn-rate rules"
    assert {f"14.4 * {slo.BUDGET}", f"6 * {slo.BUDGET}"} <= set(
        re.findall(r"[\d.]+ \* [\d.]+", rules)
    )


def test_links_point_at_these_dashboards() -> None:
    uids = set(UIDS.values())
    for dashboard in DASHBOARDS.values():
        for url in walk(dashboard, "url"):
            for uid in re.findall(r"/d/([\w-]+)", url):
                assert uid in uids, url


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    """Every expression (variables substituted) through the real PromQL parser, as rules."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    values = {
        "job": ".+",
        "instance": ".+",
        "service": "facebook",
        "check": ".+",
        "datasource": "prometheus",
        "__rate_interval": "1m",
        "__interval": "15s",
        "__interval_ms": "15000",
        "__range": "3h",
        "__range_s": "10800",
        "__range_ms": "10800000",
    }
    rules = [
        {"record": f"lint:{name.removesuffix('.json')}:{i}", "expr": substitute(t["expr"], values)}
        for name in UIDS
        for i, (_, t) in enumerate(every(name))
    ]
    path = tmp_path / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_provisioning_files() -> None:
    """The paths the compose stack mounts: dashboards/provisioning -> /etc/grafana/provisioning,
    dashboards/*.json -> /var/lib/grafana/dashboards/meta-outage."""
    base = DIRECTORY / "provisioning"
    sources = yaml.safe_load((base / "datasources" / "prometheus.yml").read_text())
    assert sources["apiVersion"] == 1
    [source] = sources["datasources"]
    assert (source["type"], source["uid"], source["access"]) == (
        "prometheus",
        "prometheus",
        "proxy",
    )
    assert source["url"] == "http://prometheus:9090" and source["isDefault"] is True
    assert re.fullmatch(r"\d+s", source["jsonData"]["timeInterval"])
    providers = yaml.safe_load((base / "dashboards" / "meta-outage.yml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/meta-outage"
