"""Reading the committed dashboards the way Grafana does: panels, targets, variables.

Shared by the lint test (conventions, offline) and the lab test (every query against a real
Prometheus). Grafana itself cannot be installed on these machines, so its variable
substitution is reproduced here: `$name` and `${name}` / `${name:format}`, multi-value
variables rendered as their "All" value or as an escaped regex, and the built-in interval
and range variables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DIRECTORY = REPO / "dashboards"
# file -> uid: stable, other dashboards' links and users' bookmarks point at them.
UIDS = {
    "overview.json": "meta-outage-overview",
    "service.json": "meta-outage-service",
    "slo.json": "meta-outage-slo",
    "exporter.json": "meta-outage-exporter",
}
GRAFANA_BUILTINS = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
)
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")

Json = dict[str, Any]


def load() -> dict[str, Json]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DIRECTORY.glob("*.json"))
    }


def panels(dashboard: Json) -> Iterator[Json]:
    """Every panel that shows data (row panels excluded, panels inside rows included)."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def variables(dashboard: Json) -> list[Json]:
    return dashboard["templating"]["list"]


def referenced(text: str) -> set[str]:
    return {a or b for a, b in _VARIABLE.findall(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Grafana's interpolation of `$name` / `${name}`; an unknown name is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"variable ${name} has no value in {text!r}")
        return values[name]

    return _VARIABLE.sub(value, text)


def regex_value(values: list[str]) -> str:
    """A multi-value selection as Grafana's Prometheus datasource renders it for `=~`."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
