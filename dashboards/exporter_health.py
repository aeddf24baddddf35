"""Exporter health: is each exporter scraped, probing on time, and running its config?

Scheduler and event-loop lag (a late probe is a wrong latency), probe rate, reload status,
and how long Prometheus takes to scrape it. Per vantage (`instance`).
"""

from __future__ import annotations

from .grafana import (
    Json,
    Panel,
    Row,
    dashboard,
    stat,
    target,
    thresholds,
    timeseries,
    value_mappings,
    vantage_variables,
)
from .promql import rate, sel

UID = "meta-outage-exporter"
PER_VANTAGE = "{{instance}}"
YES_NO = value_mappings((1, "yes", "green"), (0, "NO", "red"))


def _yes_no(title: str, description: str, metric: str) -> Panel:
    return stat(
        title,
        description,
        "none",
        [target(sel(metric), PER_VANTAGE, instant=True)],
        width=4,
        mappings=YES_NO,
    )


def status() -> Row:
    return Row(
        "Status",
        [
            _yes_no("Scraped", "Prometheus's `up` for each exporter.", "up"),
            _yes_no(
                "Ready",
                "1 once every configured check has been probed at least once.",
                "meta_exporter_ready",
            ),
            _yes_no(
                "Last config reload succeeded",
                "NO: the last reload (SIGHUP or POST /-/reload) was rejected; the previous config"
                " keeps probing. The exporter's log names the file, line and key.",
                "meta_exporter_config_last_reload_successful",
            ),
            stat(
                "Config loaded",
                "When each exporter last loaded its config successfully.",
                "dateTimeFromNow",
                [
                    target(
                        sel("meta_exporter_config_last_reload_success_timestamp_seconds")
                        + " * 1000",
                        PER_VANTAGE,
                        instant=True,
                    )
                ],
                width=4,
                color_mode="none",
            ),
            stat(
                "Checks configured",
                "Checks each exporter runs (the built-in catalogue plus the config file).",
                "none",
                [target(sel("meta_exporter_checks"), PER_VANTAGE, instant=True)],
                width=4,
                color_mode="none",
            ),
            stat(
                "Newest probe",
                "Age of each exporter's newest probe result; over 2 minutes its scheduler"
                " stalled (alert MetaProbesNotRunning).",
                "s",
                [
                    target(
                        "time() - max by (instance) "
                        f"({sel('meta_probe_last_probe_timestamp_seconds')})",
                        PER_VANTAGE,
                        instant=True,
                    )
                ],
                width=4,
                thresholds=thresholds((None, "green"), (60, "orange"), (120, "red")),
            ),
        ],
    )


def _per_vantage(title: str, description: str, unit: str, expr: str, *, width: int) -> Panel:
    return timeseries(title, description, unit, [target(expr, PER_VANTAGE)], width=width)


def _lag(title: str, description: str, metric: str) -> Panel:
    buckets = f"sum by (instance, le) ({rate(metric + '_bucket')})"
    mean = (
        f"sum by (instance) ({rate(metric + '_sum')})"
        f" / sum by (instance) ({rate(metric + '_count')})"
    )
    return timeseries(
        title,
        description,
        "s",
        [
            target(f"histogram_quantile(0.99, {buckets})", "p99 @ {{instance}}"),
            target(mean, "mean @ {{instance}}"),
        ],
        width=12,
    )


def scheduling() -> Row:
    return Row(
        "Probing",
        [
            _lag(
                "Scheduler lag",
                "How late probes start against their schedule (concurrency limit, busy loop):"
                " 99th percentile and mean.",
                "meta_exporter_scheduler_lag_seconds",
            ),
            _lag(
                "Event-loop lag",
                "How late the event loop wakes a sleeping task; high values skew every probe's"
                " timing: 99th percentile and mean.",
                "meta_exporter_event_loop_lag_seconds",
            ),
            _per_vantage(
                "Probe rate",
                "Probes started per second by each exporter (re-checks after a failure included).",
                "suffix:probes/s",
                f"sum by (instance) ({rate('meta_probes_total')})",
                width=12,
            ),
            _per_vantage(
                "Probes in flight",
                "Probes running at once in each exporter (bounded by max_concurrency).",
                "none",
                sel("meta_exporter_probes_in_flight"),
                width=12,
            ),
        ],
    )


def scrapes() -> Row:
    return Row(
        "Scrapes and process",
        [
            timeseries(
                "Scrape duration",
                "How long Prometheus takes to scrape each exporter (its scrape_duration_seconds):"
                " rendering /metrics from the cached results.",
                "s",
                [target(sel("scrape_duration_seconds"), PER_VANTAGE)],
                width=8,
            ),
            _per_vantage(
                "Samples per scrape",
                "Samples in each scrape; grows with checks and with failure reasons seen.",
                "none",
                sel("scrape_samples_scraped"),
                width=8,
            ),
            _per_vantage(
                "CPU",
                "CPU time each exporter process uses per second (1 = one core).",
                "percentunit",
                f"sum by (instance) ({rate('process_cpu_seconds_total')})",
                width=8,
            ),
        ],
    )


ROWS = (status, scheduling, scrapes)


def build() -> Json:
    return dashboard(
        uid=UID,
        title="Meta outage: exporter health",
        description="Is each meta-outage-exporter scraped, probing on time, running its"
        " config? Scheduler and event-loop lag, probe rate, reloads, scrape time.",
        variables=vantage_variables("meta_exporter_build_info"),
        rows=[row() for row in ROWS],
        time_from="now-6h",
    )
