"""Meta overview: is it us, what is down, at which layer, since when — read in five seconds.

One vantage at a time (the `instance` variable): "is it us?" is a question about one network.
Rows are a list: a new feed (official status pages, BGP) is one more function in ROWS.
"""

from __future__ import annotations

from .grafana import (
    Json,
    Panel,
    Row,
    dashboard,
    override,
    stat,
    state_timeline,
    table,
    target,
    thresholds,
    timeseries,
    value_mappings,
    vantage_variables,
)
from .promql import (
    LAYERS,
    OFFICIAL,
    STATUSES,
    encode,
    eq,
    layer_code,
    sel,
    since_ms,
    status_code,
)

UID = "meta-outage-overview"
SERVICE_UID = "meta-outage-service"
META = 'service!="control"'

STATUS_MAPPINGS = value_mappings(*((code, text, color) for _, code, text, color in STATUSES))
LAYER_MAPPINGS = value_mappings(*((code, text, color) for _, code, text, color in LAYERS))
OK_FAIL = value_mappings((1, "OK", "green"), (0, "FAIL", "red"))


def service_link(service: str) -> Json:
    """A data link to the service's detail; `service` is how the panel names the service."""
    url = (
        f"/d/{SERVICE_UID}?${{datasource:queryparam}}&${{job:queryparam}}"
        f"&var-service={service}&${{__url_time_range}}"
    )
    return {"links": [{"title": f"Open {service} in Service detail", "url": url}]}


def _count(status: str, title: str, description: str, bad: str, width: int) -> Panel:
    return stat(
        title,
        description,
        "none",
        [target(f"sum({sel('meta_service_status', eq('status', status))})", instant=True)],
        width=width,
        text_mode="value",
        thresholds=thresholds((None, "green"), (1, bad)),
    )


def is_it_us() -> Row:
    return Row(
        "Is it us? This vantage's own health",
        [
            stat(
                "Is it us?",
                "From meta_vantage_up. NO: this vantage's control checks (non-Meta targets: its"
                " resolver, 1.1.1.1, Google) pass, so the tiles below are about Meta. YES: every"
                " control check fails: the problem is this vantage's own network, and every Meta"
                " service reads UNKNOWN until it recovers.",
                "none",
                [target(sel("meta_vantage_up"), "{{instance}}", instant=True)],
                width=6,
                text_mode="value",
                mappings=value_mappings(
                    (1, "NO: our network is fine", "green"),
                    (0, "YES: our network fails", "red"),
                ),
            ),
            stat(
                "Control checks",
                "The latest result of each control check (non-Meta targets) from this vantage:"
                " when all fail, it is us.",
                "none",
                [target(sel("meta_probe_success", 'service="control"'), "{{check}}", instant=True)],
                width=4,
                mappings=OK_FAIL,
            ),
            stat(
                "QUIC from here",
                "From meta_vantage_quic_ok. BLOCKED: every HTTP/3 control check fails while the"
                " vantage is up: this network drops UDP 443, so Meta's HTTP/3 checks are not"
                " judged from here (alert MetaVantageQuicBlocked). HTTP/1.1 and HTTP/2 are.",
                "none",
                [target(sel("meta_vantage_quic_ok"), "{{instance}}", instant=True)],
                width=2,
                text_mode="value",
                mappings=value_mappings((1, "open", "green"), (0, "BLOCKED", "orange")),
            ),
            stat(
                "Exporter scraped",
                "Prometheus's `up` for this exporter: NO means nothing on this dashboard is fresh.",
                "none",
                [target(sel("up"), "{{instance}}", instant=True)],
                width=2,
                text_mode="value",
                mappings=value_mappings((1, "yes", "green"), (0, "NO", "red")),
            ),
            stat(
                "Newest probe",
                "Age of the newest probe result of this exporter. Probes run every few seconds;"
                " over 2 minutes means its scheduler stalled (alert MetaProbesNotRunning).",
                "s",
                [
                    target(
                        f"time() - max({sel('meta_probe_last_probe_timestamp_seconds')})",
                        instant=True,
                    )
                ],
                width=2,
                text_mode="value",
                thresholds=thresholds((None, "green"), (60, "orange"), (120, "red")),
            ),
            _count(
                "down",
                "Services down",
                "Meta services this vantage sees down (all their critical checks failing).",
                "red",
                3,
            ),
            _count(
                "degraded",
                "Services degraded",
                "Meta services with some checks failing or slow, but not down.",
                "orange",
                3,
            ),
            _count(
                "unknown",
                "Not judged",
                "Meta services this vantage cannot judge (status unknown): not probed yet, every"
                " probe blocked by the egress policy, or the vantage itself is offline.",
                "#8e8e8e",
                2,
            ),
        ],
    )


def services_now() -> Row:
    return Row(
        "Meta services now",
        [
            stat(
                "Status",
                "Each Meta service's verdict from this vantage: UP, DEGRADED (some checks fail or"
                " are slow), DOWN (all critical checks fail) or UNKNOWN (not judged). Click a"
                " tile for the service's detail.",
                "none",
                [target(status_code("service", META), "{{service}}", instant=True)],
                width=12,
                height=8,
                mappings=STATUS_MAPPINGS,
                extra={"defaults": service_link("${__field.labels.service}")},
            ),
            table(
                "Failing layer and since when",
                "Per service: the verdict, the lowest failing layer (bgp < dns < tcp < tls <"
                " http < content; '-' when nothing fails) and when the current status began.",
                "none",
                [
                    target(status_code("service", META), table=True, instant=True),
                    target(layer_code("service", META), table=True, instant=True),
                    target(since_ms("service", META), table=True, instant=True),
                ],
                width=12,
                height=8,
                columns=(
                    ("service", "service"),
                    ("Value #A", "Status"),
                    ("Value #B", "Failing layer"),
                    ("Value #C", "Since"),
                ),
                overrides=[
                    override("Status", _coloured(STATUS_MAPPINGS)),
                    override("Failing layer", _coloured(LAYER_MAPPINGS)),
                    override("Since", {"unit": "dateTimeFromNow"}),
                ],
                extra={"defaults": service_link("${__data.fields.service}")},
            ),
        ],
    )


def _coloured(mappings: list[Json]) -> dict[str, object]:
    return {"mappings": mappings, "custom.cellOptions": {"type": "color-background"}}


def history() -> Row:
    return Row(
        "History",
        [
            state_timeline(
                "Status over time",
                "Each Meta service's verdict over time from this vantage; hover for when a"
                " state began and how long it lasted.",
                "none",
                [target(status_code("service", META), "{{service}}")],
                width=24,
                height=9,
                mappings=STATUS_MAPPINGS,
            ),
            timeseries(
                "Services by status",
                "How many Meta services are up, degraded, down or unknown, stacked.",
                "none",
                [target(f"sum by (status) ({sel('meta_service_status', META)})", "{{status}}")],
                width=12,
                stacked=True,
                overrides=[
                    override(status, {"color": {"fixedColor": color, "mode": "fixed"}})
                    for status, _, _, color in STATUSES
                ],
            ),
            timeseries(
                "Latency per service",
                "Per service, the duration of its slowest check's latest probe (a service is"
                " degraded when a check stays slower than its latency threshold, 3 s by default).",
                "s",
                [
                    target(
                        f"max by (service) ({sel('meta_probe_duration_seconds', META)})",
                        "{{service}}",
                    )
                ],
                width=12,
            ),
        ],
    )


OFFICIAL_MAPPINGS = value_mappings(*((code, text, color) for _, code, text, color in OFFICIAL))


def outside_signals() -> Row:
    return Row(
        "Outside signals: Meta's status page and BGP",
        [
            stat(
                "Feeds",
                "Whether this exporter could read each outside feed at its last attempt (the"
                " status page, RIS Live, RIPEstat). A feed that is down is never a Meta outage:"
                " it only blinds that signal (alert MetaFeedUnreachable).",
                "none",
                [target(sel("meta_feed_up"), "{{feed}}", instant=True)],
                width=4,
                mappings=value_mappings((1, "OK", "green"), (0, "DOWN", "orange")),
            ),
            stat(
                "Meta's status page",
                "What metastatus.com says about each service with status orgs (the worst of its"
                " orgs). Compare with the tiles above: a DOWN tile with NO ISSUES here means Meta"
                " has not acknowledged it yet (alert MetaOutageUnacknowledged).",
                "none",
                [
                    target(
                        encode("meta_official_service_status", "status", OFFICIAL, "service"),
                        "{{service}}",
                        instant=True,
                    )
                ],
                width=10,
                mappings=OFFICIAL_MAPPINGS,
            ),
            stat(
                "DNS prefixes withdrawn",
                "Prefixes holding Meta's nameservers that most RIS peers have withdrawn from BGP."
                " All of a service's prefixes withdrawn = down at layer BGP (4 Oct 2021).",
                "none",
                [target(f"sum({sel('meta_bgp_prefix_withdrawn')})", instant=True)],
                width=3,
                text_mode="value",
                thresholds=thresholds((None, "green"), (1, "red")),
            ),
            timeseries(
                "BGP: RIS peers per prefix",
                "RIS peers heard from since the stream connected that see (seeing) or have"
                " withdrawn (withdrawn) each watched prefix. Absent while the stream is down.",
                "none",
                [target(sel("meta_bgp_prefix_peers"), "{{prefix}} {{state}}")],
                width=7,
            ),
        ],
    )


ROWS = (is_it_us, services_now, outside_signals, history)


def build() -> Json:
    return dashboard(
        uid=UID,
        title="Meta outage: overview",
        description="Is Meta down, at which layer, since when, and is it us? One vantage.",
        variables=vantage_variables("meta_vantage_up", one_vantage=True),
        rows=[row() for row in ROWS],
        time_from="now-3h",
        refresh="15s",
    )
