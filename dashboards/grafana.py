"""Grafana's dashboard JSON model (Grafana 10.0+, schemaVersion 38) as plain dicts. No I/O.

Only fields of Grafana's classic dashboard model are written: newer Grafana versions migrate
a schemaVersion 38 dashboard forward on load; Grafana 10.0 reads it as is. Every query goes to
the `${datasource}` variable, never to a hard-coded datasource uid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 38  # Grafana 10.0
GRID_WIDTH = 24
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "meta-outage"

Json = dict[str, Any]

# -- queries ------------------------------------------------------------------------------


def target(
    expr: str, legend: str = "__auto", *, instant: bool = False, table: bool = False
) -> Json:
    """One Prometheus query; the panel gives it its refId. Instant queries feed stats/tables."""
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "format": "table" if table else "time_series",
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": "",
    }


# -- field config pieces --------------------------------------------------------------------


def thresholds(*steps: tuple[float | None, str]) -> Json:
    """Absolute thresholds; the first step's value is None (from minus infinity)."""
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def value_mappings(*entries: tuple[float | str, str, str]) -> list[Json]:
    """(value, text, colour) -> one Grafana value mapping."""
    options = {
        _key(value): {"color": color, "index": index, "text": text}
        for index, (value, text, color) in enumerate(entries)
    }
    return [{"type": "value", "options": options}]


def _key(value: float | str) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def override(field_name: str, properties: dict[str, Any]) -> Json:
    """Field overrides by name (table columns such as "Value #A", series such as "down")."""
    return {
        "matcher": {"id": "byName", "options": field_name},
        "properties": [{"id": key, "value": value} for key, value in sorted(properties.items())],
    }


LEGEND = {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True}
HIDE_FROM = {"legend": False, "tooltip": False, "viz": False}
REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}

# -- panels ---------------------------------------------------------------------------------


@dataclass
class Panel:
    """A panel before layout: its size and its JSON (gridPos and id are set by `layout`)."""

    kind: str
    title: str
    description: str
    unit: str
    targets: list[Json]
    width: int
    height: int
    options: Json
    custom: Json = field(default_factory=dict)
    mappings: list[Json] = field(default_factory=list)
    thresholds: Json = field(default_factory=lambda: thresholds((None, "green")))
    color: Json = field(default_factory=lambda: {"mode": "thresholds"})
    overrides: list[Json] = field(default_factory=list)
    transformations: list[Json] = field(default_factory=list)
    extra: Json = field(default_factory=dict)  # links, min/max, decimals, repeat ...

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        targets = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(self.targets)]
        defaults = {
            "color": self.color,
            "custom": self.custom,
            "mappings": self.mappings,
            "thresholds": self.thresholds,
            "unit": self.unit,
            **self.extra.get("defaults", {}),
        }
        panel = {
            "datasource": DATASOURCE,
            "description": self.description,
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "id": panel_id,
            "options": self.options,
            "targets": targets,
            "title": self.title,
            "transformations": self.transformations,
            "type": self.kind,
        }
        panel.update({k: v for k, v in self.extra.items() if k != "defaults"})
        return panel


Style = Callable[[dict[str, Any]], tuple[Json, Json]]


def _builder(kind: str, style: Style, default_height: int) -> Callable[..., Panel]:
    """A panel type's builder: `style` turns (and removes) its own keyword flags into the
    type's options and custom field config; the other keywords go to Panel."""

    def build(
        title: str,
        description: str,
        unit: str,
        targets: list[Json],
        *,
        width: int,
        height: int = default_height,
        **kwargs: Any,
    ) -> Panel:
        options, custom = style(kwargs)
        return Panel(
            kind, title, description, unit, targets, width, height, options, custom, **kwargs
        )

    build.__name__ = kind.replace("-", "_")
    return build


def _stat(flags: dict[str, Any]) -> tuple[Json, Json]:
    """Flags: text_mode ("value_and_name"), color_mode ("background")."""
    options = {
        "colorMode": flags.pop("color_mode", "background"),
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": REDUCE_LAST,
        "text": {},
        "textMode": flags.pop("text_mode", "value_and_name"),
    }
    return options, {}


def _bargauge(flags: dict[str, Any]) -> tuple[Json, Json]:
    options = {
        "displayMode": "basic",
        "minVizHeight": 10,
        "minVizWidth": 0,
        "orientation": "horizontal",
        "reduceOptions": REDUCE_LAST,
        "showUnfilled": True,
        "valueMode": "color",
    }
    return options, {}


def _timeseries(flags: dict[str, Any]) -> tuple[Json, Json]:
    """Flags: stacked, bars, threshold_lines (dashed lines at the thresholds)."""
    stacked, bars = flags.pop("stacked", False), flags.pop("bars", False)
    custom = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": "",
        "axisPlacement": "auto",
        "barAlignment": 0,
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 80 if bars else (30 if stacked else 10),
        "gradientMode": "none",
        "hideFrom": HIDE_FROM,
        "insertNulls": False,
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
        "thresholdsStyle": {"mode": "dashed" if flags.pop("threshold_lines", False) else "off"},
    }
    flags.setdefault("color", {"mode": "palette-classic"})
    return {"legend": LEGEND, "tooltip": {"mode": "multi", "sort": "desc"}}, custom


def _state_timeline(flags: dict[str, Any]) -> tuple[Json, Json]:
    options = {
        "alignValue": "left",
        "legend": LEGEND,
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return options, {"fillOpacity": 80, "hideFrom": HIDE_FROM, "lineWidth": 0}


def _table(flags: dict[str, Any]) -> tuple[Json, Json]:
    """Instant table queries merged into one row per label set. Flags: columns renames fields
    ("Value #A" -> "1 day") and fixes their order; hidden fields are left out; sort_by."""
    columns: Sequence[tuple[str, str]] = flags.pop("columns", ())
    hidden: Sequence[str] = flags.pop("hidden", ())
    flags["transformations"] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": {name: True for name in ("Time", *hidden)},
                "indexByName": {name: i for i, (name, _) in enumerate(columns)},
                "renameByName": dict(columns),
            },
        },
    ]
    options = {
        "cellHeight": "sm",
        # No "fields": the table's footer takes a list of field names (or none: all).
        "footer": {"countRows": False, "reducer": ["sum"], "show": False},
        "showHeader": True,
        "sortBy": [{"desc": False, "displayName": flags.pop("sort_by", "service")}],
    }
    return options, {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}


stat = _builder("stat", _stat, 4)
bargauge = _builder("bargauge", _bargauge, 8)
timeseries = _builder("timeseries", _timeseries, 8)
state_timeline = _builder("state-timeline", _state_timeline, 8)
table = _builder("table", _table, 8)


# -- layout ----------------------------------------------------------------------------------


@dataclass
class Row:
    """A titled row of panels, laid out left to right and wrapped at the grid's width."""

    title: str
    panels: list[Panel]


def layout(rows: Iterable[Row]) -> list[Json]:
    """Row panels and their panels with gridPos and ids, top to bottom."""
    out: list[Json] = []
    y = 0
    for row in rows:
        out.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "id": len(out) + 1,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            out.append(panel.to_json(len(out) + 1, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return out


# -- variables and the dashboard ---------------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = False) -> Json:
    """A label_values() variable; multi ones offer "All" (regex .+) and start on it."""
    variable: Json = {
        "current": {},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": multi,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if multi:
        variable["allValue"] = ".+"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


def vantage_variables(metric: str, *, one_vantage: bool = False) -> list[Json]:
    """`job` and `instance` (the vantage), offered from the series of `metric`."""
    return [
        query_variable("job", "Job", f"label_values({metric}, job)", multi=True),
        query_variable(
            "instance",
            "Vantage",
            f'label_values({metric}{{job=~"$job"}}, instance)',
            multi=not one_vantage,
        ),
    ]


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    variables: list[Json],
    rows: Iterable[Row],
    time_from: str,
    refresh: str = "30s",
) -> Json:
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": [TAG],
                "targetBlank": False,
                "title": "Meta outage dashboards",
                "tooltip": "",
                "type": "dashboards",
                "url": "",
            }
        ],
        "liveNow": False,
        "panels": layout(rows),
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "tags": [TAG],
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }
