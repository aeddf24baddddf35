"""The Prometheus collector: builds metric families from a runtime Snapshot, no I/O.

Values are cached from background probes (not probed on scrape); the HELP texts say so,
and *_last_probe_timestamp_seconds tells how fresh they are. No sample timestamps.
Label values are service and check names from the config or fixed enums, never URLs,
addresses or error text.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.engine.runtime import Snapshot
from exporter.engine.store import CheckRecord, Histogram
from exporter.feeds.official import OfficialStatus
from exporter.model import Layer, Status
from exporter.net.dnsclient import rcode_number
from exporter.spec import CONTROL_SERVICE

from .feedreport import official_by_service

CACHED = " (from the latest background probe, not probed on scrape)"


@dataclass(frozen=True, slots=True)
class MetricDoc:
    name: str
    type: str
    labels: tuple[str, ...]
    help: str


# The metric contract. docs/metrics.md, "Metrics reference", lists exactly these; a test holds
# them equal.
METRICS: tuple[MetricDoc, ...] = (
    MetricDoc(
        "meta_service_status",
        "gauge",
        ("service", "status"),
        "Service verdict as a state set: 1 for the current status (up, degraded, down, unknown).",
    ),
    MetricDoc(
        "meta_service_status_since_timestamp_seconds",
        "gauge",
        ("service",),
        "Unix time when the service's current status began.",
    ),
    MetricDoc(
        "meta_service_failure_layer",
        "gauge",
        ("service", "layer"),
        "Lowest failing layer as a state set (none, bgp, dns, tcp, tls, http, content).",
    ),
    MetricDoc(
        "meta_vantage_up",
        "gauge",
        (),
        "1 when most control checks (non-Meta targets) pass; "
        "0 means the problem is this vantage, not Meta.",
    ),
    MetricDoc(
        "meta_vantage_quic_ok",
        "gauge",
        (),
        "0 when every HTTP/3 control check fails while the vantage is up: this network blocks "
        "QUIC, so Meta's QUIC failures are not judged; 1 otherwise (also while the vantage is "
        "down, and with no HTTP/3 control checks).",
    ),
    MetricDoc(
        "meta_probe_success",
        "gauge",
        ("service", "check"),
        "1 if the latest probe succeeded" + CACHED + ".",
    ),
    MetricDoc(
        "meta_probe_duration_seconds",
        "gauge",
        ("service", "check"),
        "Duration of the latest probe" + CACHED + ".",
    ),
    MetricDoc(
        "meta_probe_phase_duration_seconds",
        "histogram",
        ("service", "check", "phase"),
        "Probe time by phase (resolve, connect, tls, processing, transfer), every probe counted.",
    ),
    MetricDoc("meta_probes_total", "counter", ("service", "check"), "Probes run."),
    MetricDoc(
        "meta_probe_failures_total",
        "counter",
        ("service", "check", "reason"),
        "Failed probes by reason (a fixed enum; a reason appears once it has happened).",
    ),
    MetricDoc(
        "meta_probe_http_status_code",
        "gauge",
        ("service", "check"),
        "HTTP status of the latest probe's final response" + CACHED + ".",
    ),
    MetricDoc(
        "meta_probe_http_version",
        "gauge",
        ("service", "check"),
        "HTTP version the latest http probe spoke (1.1, 2 or 3), as blackbox's"
        " probe_http_version" + CACHED + ".",
    ),
    MetricDoc(
        "meta_probe_tls_cert_expiry_timestamp_seconds",
        "gauge",
        ("service", "check"),
        "Unix time when the leaf certificate last seen by this check expires"
        " (kept while later probes fail before TLS).",
    ),
    MetricDoc(
        "meta_probe_dns_answer_rrs",
        "gauge",
        ("service", "check"),
        "Answer records of the asked type in the latest DNS probe" + CACHED + ".",
    ),
    MetricDoc(
        "meta_probe_dns_rcode",
        "gauge",
        ("service", "check"),
        "DNS response code of the latest probe's answer (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN,"
        " 5 REFUSED); absent when no DNS answer came" + CACHED + ".",
    ),
    MetricDoc(
        "meta_probe_ip_protocol",
        "gauge",
        ("service", "check"),
        "IP version (4 or 6) the latest probe connected over" + CACHED + ".",
    ),
    MetricDoc(
        "meta_probe_last_probe_timestamp_seconds",
        "gauge",
        ("service", "check"),
        "Unix time when the latest probe started.",
    ),
    MetricDoc(
        "meta_probe_consecutive_failures",
        "gauge",
        ("service", "check"),
        "Failed probes in a row since the vantage last settled, every probe counted; whether"
        " the failure counts against Meta is meta_check_failing.",
    ),
    MetricDoc(
        "meta_probes_judged_total",
        "counter",
        ("service", "check"),
        "Probes of a Meta check that counted toward its verdict: measured while this vantage"
        " was healthy and settled, and vouched for by the control checks after (the SLI;"
        " probes from an offline, unsettled or recovering vantage are never in it). For a"
        ' control check (service="control"): its probes measured while the vantage was up,'
        " the baseline of this network's own error ratio that the burn-rate alerts subtract.",
    ),
    MetricDoc(
        "meta_probe_judged_failures_total",
        "counter",
        ("service", "check"),
        "The failed ones among meta_probes_judged_total.",
    ),
    MetricDoc(
        "meta_check_failing",
        "gauge",
        ("service", "check"),
        "1 when this Meta check's failure counts in its service's verdict (confirmed by"
        " re-check, measured while the vantage was healthy and settled, vouched for by the"
        " control checks after), else 0.",
    ),
    MetricDoc(
        "meta_feed_up",
        "gauge",
        ("feed",),
        "1 when the feed (official_status, bgp, bgp_baseline) answered at its last attempt;"
        " a feed that is down is never read as a Meta outage.",
    ),
    MetricDoc(
        "meta_feed_last_success_timestamp_seconds",
        "gauge",
        ("feed",),
        "Unix time of the feed's last good poll or (re)connection.",
    ),
    MetricDoc(
        "meta_feed_errors_total",
        "counter",
        ("feed", "reason"),
        "Feed failures and malformed messages by reason (a fixed enum).",
    ),
    MetricDoc(
        "meta_official_status",
        "gauge",
        ("org", "component", "status"),
        "Meta's status page per org and component as a state set (no_issues, low_disruption,"
        " medium_disruption, major_disruption, unknown).",
    ),
    MetricDoc(
        "meta_official_service_status",
        "gauge",
        ("service", "status"),
        "The status page's worst word on the service's status_orgs, as a state set.",
    ),
    MetricDoc(
        "meta_official_acknowledgement_lag_seconds",
        "gauge",
        ("service",),
        "While both hold: seconds from this exporter's DOWN verdict to the status page first"
        " showing a disruption (negative: the page said it first; precision: the poll interval).",
    ),
    MetricDoc(
        "meta_bgp_prefix_peers",
        "gauge",
        ("prefix", "state"),
        "RIS peers heard from since the stream connected that see (state=seeing) or have"
        " withdrawn (state=withdrawn) the watched prefix; absent while the stream is down.",
    ),
    MetricDoc(
        "meta_bgp_prefix_withdrawn",
        "gauge",
        ("prefix",),
        "1 when most known RIS peers have withdrawn the prefix (at least min_peers known).",
    ),
    MetricDoc(
        "meta_bgp_prefix_last_withdrawal_timestamp_seconds",
        "gauge",
        ("prefix",),
        "Unix time (RIS timestamp) of the last withdrawal that left a peer without the prefix.",
    ),
    MetricDoc(
        "meta_bgp_baseline_peers",
        "gauge",
        ("prefix", "state"),
        "RIPEstat routing-status: RIS peers seeing the prefix (state=seeing) and in all"
        " (state=total); a slow baseline, snapshots every 8 h.",
    ),
    MetricDoc(
        "meta_exporter_build_info",
        "gauge",
        ("version", "python_version"),
        "Build information; always 1.",
    ),
    MetricDoc(
        "meta_exporter_config_last_reload_successful",
        "gauge",
        (),
        "1 if the last config reload succeeded (the old config keeps running when not).",
    ),
    MetricDoc(
        "meta_exporter_config_last_reload_success_timestamp_seconds",
        "gauge",
        (),
        "Unix time of the last successful config load.",
    ),
    MetricDoc(
        "meta_exporter_scheduler_lag_seconds",
        "histogram",
        (),
        "How late probes start against their schedule (concurrency limit, busy loop).",
    ),
    MetricDoc(
        "meta_exporter_event_loop_lag_seconds",
        "histogram",
        (),
        "How late the event loop wakes a sleeping task; high values skew probe timings.",
    ),
    MetricDoc("meta_exporter_checks", "gauge", (), "Checks configured."),
    MetricDoc("meta_exporter_probes_in_flight", "gauge", (), "Probes running right now."),
    MetricDoc(
        "meta_exporter_asyncio_tasks",
        "gauge",
        (),
        "asyncio tasks alive in the exporter's event loop; flat over time unless tasks leak.",
    ),
    MetricDoc(
        "meta_exporter_ready",
        "gauge",
        (),
        "1 once every configured check has been probed at least once.",
    ),
)

_DOCS = {doc.name: doc for doc in METRICS}


def _gauge(name: str) -> GaugeMetricFamily:
    doc = _DOCS[name]
    return GaugeMetricFamily(name, doc.help, labels=list(doc.labels))


def _histogram_samples(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    return [(le, float(count)) for le, count in histogram.cumulative()], histogram.total


def _plain_histogram(name: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets, total = _histogram_samples(histogram)
    return HistogramMetricFamily(name, _DOCS[name].help, buckets=buckets, sum_value=total)


def _asyncio_tasks() -> int | None:
    """Tasks of the running loop (scrapes are served on it); None outside a loop."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return None


def check_families(records: Mapping[tuple[str, str], CheckRecord]) -> Iterator[Metric]:
    """The per-check families, in exposition order (empty records: their metadata alone)."""
    success = _gauge("meta_probe_success")
    duration = _gauge("meta_probe_duration_seconds")
    http_status = _gauge("meta_probe_http_status_code")
    http_version = _gauge("meta_probe_http_version")
    expiry = _gauge("meta_probe_tls_cert_expiry_timestamp_seconds")
    answers = _gauge("meta_probe_dns_answer_rrs")
    rcode = _gauge("meta_probe_dns_rcode")
    protocol = _gauge("meta_probe_ip_protocol")
    last = _gauge("meta_probe_last_probe_timestamp_seconds")
    in_row = _gauge("meta_probe_consecutive_failures")
    doc = _DOCS["meta_probes_total"]
    probes = CounterMetricFamily("meta_probes", doc.help, labels=list(doc.labels))
    doc = _DOCS["meta_probe_failures_total"]
    failures = CounterMetricFamily("meta_probe_failures", doc.help, labels=list(doc.labels))
    doc = _DOCS["meta_probe_phase_duration_seconds"]
    phases = HistogramMetricFamily(doc.name, doc.help, labels=list(doc.labels))
    doc = _DOCS["meta_probes_judged_total"]
    judged = CounterMetricFamily("meta_probes_judged", doc.help, labels=list(doc.labels))
    doc = _DOCS["meta_probe_judged_failures_total"]
    judged_failures = CounterMetricFamily(
        "meta_probe_judged_failures", doc.help, labels=list(doc.labels)
    )
    failing = _gauge("meta_check_failing")
    for (service, check), record in records.items():
        labels = [service, check]
        probes.add_metric(labels, float(record.probes_total))
        judged.add_metric(labels, float(record.judged_total))
        judged_failures.add_metric(labels, float(record.judged_failures))
        if service != CONTROL_SERVICE:  # the verdict is about Meta's checks only
            failing.add_metric(labels, 1.0 if record.counted_failing else 0.0)
        for reason, count in sorted(record.failures.items(), key=lambda item: item[0].value):
            failures.add_metric([*labels, reason.value], float(count))
        for phase, histogram in sorted(record.phases.items(), key=lambda item: item[0].value):
            buckets, total = _histogram_samples(histogram)
            phases.add_metric([*labels, phase.value], buckets, total)
        result = record.last
        if result is None:
            continue
        success.add_metric(labels, 1.0 if result.success else 0.0)
        duration.add_metric(labels, result.duration)
        last.add_metric(labels, result.started_at)
        in_row.add_metric(labels, float(record.consecutive_failures))
        if result.http_status is not None:
            http_status.add_metric(labels, float(result.http_status))
        if result.http_version is not None:
            http_version.add_metric(labels, float(result.http_version))
        if record.tls_expiry is not None:
            expiry.add_metric(labels, record.tls_expiry)
        if result.dns_answers is not None:
            answers.add_metric(labels, float(result.dns_answers))
        number = rcode_number(result.dns_rcode) if result.dns_rcode else None
        if number is not None:
            rcode.add_metric(labels, float(number))
        if result.address_family is not None:
            protocol.add_metric(labels, 6.0 if result.address_family == "ipv6" else 4.0)
    yield from (
        success,
        duration,
        phases,
        probes,
        failures,
        http_status,
        http_version,
        expiry,
        answers,
        rcode,
        protocol,
        last,
        in_row,
        judged,
        judged_failures,
        failing,
    )


class ExporterCollector(Collector):
    """`checks=False` leaves out the per-check families: /metrics renders those itself, in
    slices (exporter/web/exposition.py), from the same `check_families` definitions."""

    def __init__(self, snapshot: Callable[[], Snapshot], *, checks: bool = True) -> None:
        self._snapshot = snapshot
        self._checks = checks

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from self._service_families(snap)
        if self._checks:
            yield from check_families(snap.records)
        yield from self._exporter_families(snap)
        yield from self._feed_families(snap)

    def _service_families(self, snap: Snapshot) -> Iterator[Metric]:
        status = _gauge("meta_service_status")
        since = _gauge("meta_service_status_since_timestamp_seconds")
        layer = _gauge("meta_service_failure_layer")
        for service in snap.config.meta_services:
            state = snap.services.get(service.name)
            if state is None:
                continue
            for value in Status:
                status.add_metric(
                    [service.name, value.value], 1.0 if state.status is value else 0.0
                )
            since.add_metric([service.name], state.since)
            for value in Layer:
                layer.add_metric([service.name, value.value], 1.0 if state.layer is value else 0.0)
        vantage = _gauge("meta_vantage_up")
        vantage.add_metric([], 1.0 if snap.vantage.up else 0.0)
        quic = _gauge("meta_vantage_quic_ok")
        # 0 only while the vantage is up: offline, every control check fails, QUIC's too.
        quic.add_metric([], 0.0 if snap.vantage.up and not snap.vantage.quic_ok else 1.0)
        yield from (status, since, layer, vantage, quic)

    def _exporter_families(self, snap: Snapshot) -> Iterator[Metric]:
        info = InfoMetricFamily("meta_exporter_build", _DOCS["meta_exporter_build_info"].help)
        info.add_metric([], {"version": __version__, "python_version": platform.python_version()})
        reload_ok = _gauge("meta_exporter_config_last_reload_successful")
        reload_ok.add_metric([], 1.0 if snap.reload_successful else 0.0)
        reload_time = _gauge("meta_exporter_config_last_reload_success_timestamp_seconds")
        reload_time.add_metric([], snap.reload_success_time)
        checks = _gauge("meta_exporter_checks")
        checks.add_metric([], float(len(snap.config.checks)))
        in_flight = _gauge("meta_exporter_probes_in_flight")
        in_flight.add_metric([], float(snap.in_flight))
        ready = _gauge("meta_exporter_ready")
        ready.add_metric([], 1.0 if snap.ready else 0.0)
        yield from (info, reload_ok, reload_time, checks, in_flight, ready)
        tasks = _asyncio_tasks()
        if tasks is not None:
            alive = _gauge("meta_exporter_asyncio_tasks")
            alive.add_metric([], float(tasks))
            yield alive
        yield _plain_histogram("meta_exporter_scheduler_lag_seconds", snap.scheduler_lag)
        yield _plain_histogram("meta_exporter_event_loop_lag_seconds", snap.loop_lag)

    def _feed_families(self, snap: Snapshot) -> Iterator[Metric]:
        feeds = snap.feeds
        if not feeds.health:
            return  # no feed configured: no empty families either
        up = _gauge("meta_feed_up")
        last = _gauge("meta_feed_last_success_timestamp_seconds")
        doc = _DOCS["meta_feed_errors_total"]
        errors = CounterMetricFamily("meta_feed_errors", doc.help, labels=list(doc.labels))
        for health in feeds.health:
            up.add_metric([health.name], 1.0 if health.up else 0.0)
            if health.last_success is not None:
                last.add_metric([health.name], health.last_success)
            for error, count in sorted(health.errors.items(), key=lambda item: item[0].value):
                errors.add_metric([health.name, error.value], float(count))
        yield from (up, last, errors)
        yield from self._official_families(snap)
        yield from self._bgp_families(snap)

    def _official_families(self, snap: Snapshot) -> Iterator[Metric]:
        board = snap.feeds.official
        if board is None:
            return
        per_component = _gauge("meta_official_status")
        for c in board.components:
            for value in OfficialStatus:
                per_component.add_metric(
                    [c.org, c.component, value.value], 1.0 if c.status is value else 0.0
                )
        per_service = _gauge("meta_official_service_status")
        lag = _gauge("meta_official_acknowledgement_lag_seconds")
        for name, official, seconds in official_by_service(board, snap.config, snap.services):
            for value in OfficialStatus:
                per_service.add_metric(
                    [name, value.value], 1.0 if official.status is value else 0.0
                )
            if seconds is not None:
                lag.add_metric([name], seconds)
        yield from (per_component, per_service, lag)

    def _bgp_families(self, snap: Snapshot) -> Iterator[Metric]:
        if not any(h.name == "bgp" for h in snap.feeds.health):
            return
        views, baseline = snap.feeds.bgp, snap.feeds.baseline
        peers = _gauge("meta_bgp_prefix_peers")
        withdrawn = _gauge("meta_bgp_prefix_withdrawn")
        last = _gauge("meta_bgp_prefix_last_withdrawal_timestamp_seconds")
        for prefix, view in (views or {}).items():
            peers.add_metric([prefix, "seeing"], float(view.seeing))
            peers.add_metric([prefix, "withdrawn"], float(view.withdrawn))
            withdrawn.add_metric([prefix], 1.0 if view.withdrawn_now else 0.0)
            if view.last_withdrawal is not None:
                last.add_metric([prefix], view.last_withdrawal)
        base = _gauge("meta_bgp_baseline_peers")
        for prefix, counts in baseline.items():
            base.add_metric([prefix, "seeing"], float(counts.seeing))
            base.add_metric([prefix, "total"], float(counts.total))
        yield from (peers, withdrawn, last, base)


def build_registry(
    snapshot: Callable[[], Snapshot], *, process_metrics: bool = True, checks: bool = True
) -> CollectorRegistry:
    """A fresh registry (never the global one) with our collector and process_* metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(snapshot, checks=checks))
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry
