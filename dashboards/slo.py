"""SLO / uptime report: availability over 1d / 7d / 30d, error budget, burn rate, outages.

Availability, budget and burn rate read the recording rules of alerts/meta-outage.rules.yml
(the same numbers the burn-rate alerts page on): the probe-success SLI over judged probes
(measured while the vantage was healthy and settled, vouched for by its control checks: our
own outages are left out), per service, against a 99.5 % objective. Outages come from each
vantage's verdicts.
"""

from __future__ import annotations

from .grafana import (
    Json,
    Panel,
    Row,
    bargauge,
    dashboard,
    override,
    query_variable,
    state_timeline,
    table,
    target,
    thresholds,
    timeseries,
    value_mappings,
    vantage_variables,
)
from .promql import sel

UID = "meta-outage-slo"
OBJECTIVE = 0.995  # the rules' 99.5 % (their budget 0.005); a test holds them equal
BUDGET = round(1 - OBJECTIVE, 6)
SERVICE = 'service=~"$service"'
PER_SERVICE = "{{service}}"
AVAILABILITY = thresholds((None, "red"), (OBJECTIVE, "green"))
DOWN = ("meta_service_status", SERVICE, 'status="down"')


def availability() -> Row:
    return Row(
        "Availability (judged probe success)",
        [
            table(
                "Availability per service",
                "Share of judged probes that succeeded over the last day, 7 days and 30"
                " days (recording rules meta_service:*). A probe is judged when its vantage"
                " was healthy and settled and the control checks vouched for it: our own"
                f" outages are not counted. Objective {OBJECTIVE:.1%}: red below it.",
                "percentunit",
                [
                    target(
                        f"meta_service:availability:ratio_rate1d{{{SERVICE}}}",
                        table=True,
                        instant=True,
                    ),
                    target(
                        f"1 - avg_over_time(meta_service:error:ratio_rate5m{{{SERVICE}}}[7d])",
                        table=True,
                        instant=True,
                    ),
                    target(
                        f"meta_service:availability:ratio_rate30d{{{SERVICE}}}",
                        table=True,
                        instant=True,
                    ),
                ],
                width=12,
                height=9,
                columns=(
                    ("service", "service"),
                    ("Value #A", "1 day"),
                    ("Value #B", "7 days"),
                    ("Value #C", "30 days"),
                ),
                thresholds=AVAILABILITY,
                extra={"defaults": {"decimals": 3}},
                overrides=[
                    override(name, {"custom.cellOptions": {"type": "color-text"}})
                    for name in ("1 day", "7 days", "30 days")
                ],
            ),
            bargauge(
                "Error budget left (30 days)",
                f"Share of the 30-day error budget ({BUDGET:.1%} of judged probes may fail) not yet"
                " spent; below zero the objective is missed.",
                "percentunit",
                [
                    target(
                        "1 - (1 - meta_service:availability:ratio_rate30d"
                        f"{{{SERVICE}}}) / {BUDGET}",
                        PER_SERVICE,
                        instant=True,
                    )
                ],
                width=12,
                height=9,
                thresholds=thresholds((None, "red"), (0.25, "orange"), (0.5, "green")),
                extra={"defaults": {"max": 1, "min": 0}},
            ),
        ],
    )


def burn_rate(window: str, page_at: float) -> Panel:
    return timeseries(
        f"Burn rate ({window} window)",
        f"How fast the error budget burns, as the burn-rate alerts read it: the error ratio"
        f" over {window} above this network's own (the median control check's), divided by"
        f" the budget ({BUDGET}). 1 spends the budget in exactly 30 days; the dashed line is"
        f" the burn-rate alerts' {page_at}x.",
        "suffix:x",
        [
            target(
                f"meta_service:excess_error:ratio_rate{window}{{{SERVICE}}} / {BUDGET}",
                PER_SERVICE,
            )
        ],
        width=12,
        threshold_lines=True,
        thresholds=thresholds((None, "green"), (page_at, "red")),
    )


def burn() -> Row:
    return Row(
        "Error budget burn",
        [
            burn_rate("1h", 14.4),
            burn_rate("6h", 6),
            timeseries(
                "Availability (5 minute windows)",
                "Share of judged probes that succeeded in each 5-minute window (probes from"
                " healthy, settled vantages only): the SLI every window above averages.",
                "percentunit",
                [target(f"meta_service:availability:ratio_rate5m{{{SERVICE}}}", PER_SERVICE)],
                width=24,
                thresholds=AVAILABILITY,
            ),
        ],
    )


def outages() -> Row:
    down = sel(*DOWN)
    return Row(
        "Outages (per vantage)",
        [
            state_timeline(
                "Down periods",
                "When each service was DOWN as each vantage saw it; hover for start and duration.",
                "none",
                [target(down, "{{service}} @ {{instance}}")],
                width=24,
                mappings=value_mappings((0, "not down", "transparent"), (1, "DOWN", "red")),
            ),
            table(
                "Outages in the time range",
                "Per service and vantage over the dashboard's time range: outages (down"
                " periods that overlap it), total time down and the longest outage, at the"
                " panel's resolution ($__interval).",
                "none",
                [
                    # An outage starts with a 0 -> 1 change; (changes + now) / 2, rounded up,
                    # counts those, plus one already running when the range began.
                    target(
                        f"sum without (status) (ceil((changes({down}[$__range]) + {down}) / 2))",
                        table=True,
                        instant=True,
                    ),
                    target(
                        f"sum without (status) (sum_over_time({down}[$__range:$__interval]))"
                        " * $__interval_ms / 1000",
                        table=True,
                        instant=True,
                    ),
                    target(
                        "max_over_time(((time() - "
                        f"{sel('meta_service_status_since_timestamp_seconds', SERVICE)})"
                        f" * ignoring(status) {down})[$__range:$__interval])",
                        table=True,
                        instant=True,
                    ),
                ],
                width=24,
                columns=(
                    ("service", "service"),
                    ("instance", "vantage"),
                    ("Value #A", "Outages"),
                    ("Value #B", "Time down"),
                    ("Value #C", "Longest outage"),
                ),
                hidden=("job",),
                overrides=[
                    override("Time down", {"unit": "dtdurations"}),
                    override("Longest outage", {"unit": "dtdurations"}),
                ],
                extra={"defaults": {"decimals": 0}},
            ),
        ],
    )


ROWS = (availability, burn, outages)


def build() -> Json:
    return dashboard(
        uid=UID,
        title="Meta outage: SLO and uptime",
        description="Availability of each Meta service over 1d / 7d / 30d against a"
        f" {OBJECTIVE:.1%} probe-success objective, error budget and burn rate, outages.",
        variables=[
            *vantage_variables("meta_service_status"),
            query_variable(
                "service",
                "Service",
                'label_values(meta_service_status{job=~"$job",instance=~"$instance"}, service)',
                multi=True,
            ),
        ],
        rows=[row() for row in ROWS],
        time_from="now-7d",
        refresh="1m",
    )
