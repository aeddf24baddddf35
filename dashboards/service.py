"""Service detail: one service (`service`), each check, per vantage (`instance`).

Success, latency by phase (one stacked panel per check, repeated over `check`), HTTP status
codes, DNS answers and response codes, TLS expiry, and probe outcomes by failure reason.
"""

from __future__ import annotations

from .grafana import (
    Json,
    Row,
    dashboard,
    query_variable,
    stat,
    state_timeline,
    target,
    thresholds,
    timeseries,
    value_mappings,
    vantage_variables,
)
from .overview import LAYER_MAPPINGS, OK_FAIL, SERVICE_UID, STATUS_MAPPINGS
from .promql import RATE, RCODES, layer_code, rate, sel, since_ms, status_code

UID = SERVICE_UID
SERVICE = 'service="$service"'
CHECKS = (SERVICE, 'check=~"$check"')
PER_CHECK = "{{check}} @ {{instance}}"
DAY = 86400


def now() -> Row:
    return Row(
        "$service now, per vantage",
        [
            stat(
                "Status",
                "The service's verdict as each vantage sees it: UP, DEGRADED, DOWN or UNKNOWN.",
                "none",
                [target(status_code("instance", SERVICE), "{{instance}}", instant=True)],
                width=8,
                mappings=STATUS_MAPPINGS,
            ),
            stat(
                "Failing layer",
                "The lowest failing layer per vantage: bgp < dns < tcp < tls < http < content;"
                " '-' when no check fails.",
                "none",
                [target(layer_code("instance", SERVICE), "{{instance}}", instant=True)],
                width=8,
                mappings=LAYER_MAPPINGS,
            ),
            stat(
                "In this status since",
                "When the current status began, per vantage (a layer change inside DOWN keeps it).",
                "dateTimeFromNow",
                [target(since_ms("instance", SERVICE), "{{instance}}", instant=True)],
                width=8,
                color_mode="none",
            ),
        ],
    )


def checks() -> Row:
    return Row(
        "Checks",
        [
            state_timeline(
                "Check results",
                "Each check's latest probe result over time, per vantage: OK or FAIL (the"
                " reason is in Probe outcomes below).",
                "none",
                [target(sel("meta_probe_success", *CHECKS), PER_CHECK)],
                width=24,
                mappings=OK_FAIL,
            ),
            timeseries(
                "Probe duration",
                "Duration of each check's latest probe, per vantage (DNS, connect, TLS and HTTP"
                " together).",
                "s",
                [target(sel("meta_probe_duration_seconds", *CHECKS), PER_CHECK)],
                width=12,
            ),
            timeseries(
                "Consecutive failures",
                "Failed probes in a row per check, every probe counted (those our own"
                " network failed too). From confirm_failures (2 by default, dashed) on, the"
                " check fails in the verdict only if the vantage was healthy and settled"
                " (meta_check_failing).",
                "none",
                [target(sel("meta_probe_consecutive_failures", *CHECKS), PER_CHECK)],
                width=12,
                threshold_lines=True,
                thresholds=thresholds((None, "green"), (2, "red")),
            ),
        ],
    )


def phases() -> Row:
    mean = (
        f"sum by (phase) ({rate('meta_probe_phase_duration_seconds_sum', *CHECKS)})\n"
        f"/ sum by (phase) ({rate('meta_probe_phase_duration_seconds_count', *CHECKS)})"
    )
    return Row(
        "Latency by phase",
        [
            timeseries(
                "Latency by phase: $check",
                "Mean time per phase (resolve, connect, tls, processing, transfer) of this"
                " check's probes over the selected vantages, stacked: the top of the stack is"
                " the mean probe time. One panel per check.",
                "s",
                [target(mean, "{{phase}}")],
                width=8,
                stacked=True,
                extra={"maxPerRow": 3, "repeat": "check", "repeatDirection": "h"},
            )
        ],
    )


def protocols() -> Row:
    return Row(
        "HTTP, DNS, TLS",
        [
            state_timeline(
                "HTTP status codes",
                "Status of each HTTP check's latest final response, per vantage; gaps mean no"
                " response (the probe failed before HTTP, e.g. at DNS).",
                "none",
                [target(sel("meta_probe_http_status_code", *CHECKS), PER_CHECK)],
                width=12,
                thresholds=thresholds(
                    (None, "blue"), (200, "green"), (300, "blue"), (400, "orange"), (500, "red")
                ),
            ),
            state_timeline(
                "HTTP versions",
                "HTTP version each HTTP check's latest probe spoke, per vantage: 2 where the"
                " server offered h2 by ALPN (the default), 1.1 where it did not or the check asks"
                " for 1.1, 3 for the HTTP/3 (QUIC) checks.",
                "none",
                [target(sel("meta_probe_http_version", *CHECKS), PER_CHECK)],
                width=12,
                mappings=value_mappings(
                    (1.1, "HTTP/1.1", "blue"), (2, "HTTP/2", "green"), (3, "HTTP/3", "purple")
                ),
            ),
            stat(
                "TLS certificate expires in",
                "Time left on the leaf certificate each TLS/HTTPS check last saw (kept while"
                " later probes fail before TLS). Red under 7 days (alert"
                " MetaTLSCertificateExpiringSoon).",
                "dtdurations",
                [
                    target(
                        f"{sel('meta_probe_tls_cert_expiry_timestamp_seconds', *CHECKS)} - time()",
                        PER_CHECK,
                        instant=True,
                    )
                ],
                width=12,
                color_mode="value",
                thresholds=thresholds((None, "red"), (7 * DAY, "orange"), (21 * DAY, "green")),
            ),
            state_timeline(
                "DNS response codes",
                "Response code of each DNS check's latest answer, per vantage (other checks"
                " show one only when their own lookup was answered with an error). Services"
                " without a DNS check show none.",
                "none",
                [target(sel("meta_probe_dns_rcode", *CHECKS), PER_CHECK)],
                width=12,
                mappings=value_mappings(*RCODES),
            ),
            timeseries(
                "DNS answer records",
                "Answer records of the asked type in each DNS check's latest answer, per"
                " vantage. Services without a DNS check show none.",
                "none",
                [target(sel("meta_probe_dns_answer_rrs", *CHECKS), PER_CHECK)],
                width=12,
            ),
        ],
    )


def failures() -> Row:
    # Successes have no counter of their own: probes minus failures, labelled reason="ok"
    # (the exporter's own name for success). A failure reason's series exists only once it
    # has happened, so "no failure series" counts as zero failures, not as no data.
    by = "sum by (instance)"
    probes = f"{by} ({rate('meta_probes_total', *CHECKS)})"
    failed = f"{by} ({rate('meta_probe_failures_total', *CHECKS)})"
    outcomes = (
        f"sum by (instance, reason) ({rate('meta_probe_failures_total', *CHECKS)})\n"
        f'or label_replace({probes} - ({failed} or {probes} * 0), "reason", "ok", "", "")'
    )
    return Row(
        "Failures",
        [
            timeseries(
                "Probe outcomes by reason",
                "Probes per second of the selected checks, per vantage, stacked by outcome:"
                " ok, or the failure reason (dns_servfail, tcp_timeout, tls_cert_expired,"
                f" http_status ...). Rates over {RATE}.",
                "suffix:probes/s",
                [target(outcomes, "{{reason}} @ {{instance}}")],
                width=24,
                stacked=True,
                bars=True,
            )
        ],
    )


ROWS = (now, checks, phases, protocols, failures)


def build() -> Json:
    scope = 'job=~"$job",instance=~"$instance"'
    return dashboard(
        uid=UID,
        title="Meta outage: service detail",
        description="One service's checks per vantage: results, latency by phase, HTTP,"
        " DNS and TLS details, failure reasons.",
        variables=[
            *vantage_variables("meta_probe_success"),
            # Meta services only: the control checks have no verdict of their own (theirs is
            # the vantage's); the overview's "Is it us?" row shows them.
            query_variable(
                "service", "Service", f"label_values(meta_service_status{{{scope}}}, service)"
            ),
            query_variable(
                "check",
                "Check",
                f'label_values(meta_probe_success{{{scope},service="$service"}}, check)',
                multi=True,
            ),
        ],
        rows=[row() for row in ROWS],
        time_from="now-3h",
        refresh="15s",
    )
