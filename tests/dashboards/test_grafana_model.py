"""Every committed dashboard read by Grafana's own dashboard model, for the Grafana version
the compose stack runs (tests/dashboards/grafana_model.py says how and what it finds).

Where our dashboards knowingly differ from the model, the difference is listed below with
Grafana's own source for it; anything else fails. A test shows that each kind of breakage is
caught, and another that every listed divergence still occurs (the list stays minimal)."""

from __future__ import annotations

import copy
import importlib.metadata
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from .grafana_model import findings
from .model import REPO, Json, load

DASHBOARDS = load()
COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yml"

DIVERGENCES: dict[str, re.Pattern[str]] = {
    # Grafana's frontend saves `definition` on query variables: the query as the variables
    # list shows it (QueryVariableModel, `definition: string`, in
    # packages/grafana-data/src/types/templateVars.ts). The schema's VariableModel has no
    # such field; Grafana keeps it on import and uses it for display.
    "query variables' definition": re.compile(
        r"\$\.templating\.list\[\d+\]\.definition: not in the model \(dropped\)"
    ),
}


def unexplained(dashboard: Json) -> list[str]:
    return [
        finding
        for finding in findings(dashboard)
        if not any(pattern.fullmatch(finding) for pattern in DIVERGENCES.values())
    ]


def test_the_model_is_the_build_for_the_compose_stacks_grafana() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    image = compose["services"]["grafana"]["image"]
    grafana = image.rsplit(":", 1)[1]
    sdk = importlib.metadata.version("grafana-foundation-sdk")
    assert sdk.rsplit("!", 1)[-1] == grafana, f"SDK build {sdk} for compose's {image}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_dashboard_reads_as_grafanas_model(name: str) -> None:
    assert not unexplained(DASHBOARDS[name])


def test_every_listed_divergence_still_occurs() -> None:
    every = [finding for dashboard in DASHBOARDS.values() for finding in findings(dashboard)]
    for why, pattern in DIVERGENCES.items():
        assert any(pattern.fullmatch(f) for f in every), f"no longer needed: {why}"


def _first(dashboard: Json, panel_type: str) -> dict[str, Any]:
    return next(p for p in dashboard["panels"] if p.get("type") == panel_type)


def _misspell(dashboard: Json) -> None:
    panel = _first(dashboard, "stat")
    panel["fieldConfg"] = panel.pop("fieldConfig")


def _unknown_panel(dashboard: Json) -> None:
    _first(dashboard, "stat")["type"] = "no-such-panel"


def _typo_in_a_query(dashboard: Json) -> None:
    target = _first(dashboard, "stat")["targets"][0]
    target["exp"] = target.pop("expr")


BREAKAGES: dict[str, tuple[Callable[[Json], None], str]] = {
    "a misspelled panel key": (_misspell, r"\.fieldConfg: not in the model"),
    "a grid height as a string": (
        lambda d: _first(d, "stat")["gridPos"].update(h="8"),
        r"\.gridPos\.h: '8' is not int",
    ),
    "a panel type Grafana lacks": (_unknown_panel, r"panel type 'no-such-panel' has no model"),
    "a variable hidden by 7": (
        lambda d: d["templating"]["list"][0].update(hide=7),
        r"\.templating\.list\[0\]\.hide: 7 is not",
    ),
    "a stat's calcs as a string": (
        lambda d: _first(d, "stat")["options"]["reduceOptions"].update(calcs="last"),
        r"\.options\.reduceOptions\.calcs: 'last' is not list\[str\]",
    ),
    "a thresholds mode Grafana lacks": (
        lambda d: _first(d, "stat")["fieldConfig"]["defaults"]["thresholds"].update(mode="pct"),
        r"\.thresholds\.mode: 'pct' is not ThresholdsMode",
    ),
    "a Prometheus query's misspelled key": (_typo_in_a_query, r"\.targets\[0\]\.exp: not in"),
    "a value mapping as a string": (
        lambda d: _first(d, "stat")["fieldConfig"]["defaults"].update(mappings=["oops"]),
        r"the model cannot read it",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_dashboard_is_caught(breakage: str) -> None:
    broken = copy.deepcopy(DASHBOARDS["overview.json"])
    mutate, expected = BREAKAGES[breakage]
    mutate(broken)
    new = set(unexplained(broken)) - set(unexplained(DASHBOARDS["overview.json"]))
    assert any(re.search(expected, finding) for finding in new), new
