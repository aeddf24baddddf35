"""/metrics: the per-check families rendered fast and in slices, the rest by prometheus_client.

prometheus_client renders every sample through generic objects, about 8 us each: 2000
HTTPS checks are 180 000 samples, 1.4 s (text) to 1.9 s (OpenMetrics) of CPU with the
event loop held, every scrape, and every probe finishing meanwhile was timed that much late
(docs/benchmarks.md). Here the per-check families (`metrics.check_families`, which gives
their names, types and help) are written from cached label strings, about 12 times faster,
and the loop is let go between slices of checks, so a scrape delays no probe by more than
a slice (about a millisecond). The other families, few samples, stay with prometheus_client.

Consistency: each check's samples within one family come from one moment (no await inside
a slice), but families are written one after another, so a probe that finishes during the
scrape may show in a later family and not an earlier one, as with any instrumented program
scraped while it runs. tests/unit/test_exposition.py holds the output equal to
prometheus_client's rendering of the same families, in both formats.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from functools import cache, lru_cache

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.engine.runtime import Snapshot
from exporter.engine.store import CheckRecord, Histogram
from exporter.net.dnsclient import rcode_number
from exporter.spec import CONTROL_SERVICE

from .metrics import check_families

Records = Mapping[tuple[str, str], CheckRecord]
Row = tuple[tuple[str, str], CheckRecord]
# Checks per slice: a slice of the largest family (5 phase histograms a check) is about a
# millisecond of CPU, the longest the event loop waits for a scrape.
SLICE = 25
CHUNK = 256 * 1024  # bytes of body handed to the socket at a time
OPENMETRICS_EOF = "# EOF\n"


class _Families(Collector):
    def __init__(self, families: Iterable[object]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator:  # type: ignore[type-arg]
        return iter(self._families)


@cache
def _headers(openmetrics: bool) -> tuple[tuple[str, str], ...]:
    """(family name, its HELP and TYPE lines) per check family, in order."""
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else ""
    encoder, _ = choose_encoder(accept)
    return tuple(
        (family.name, encoder(_Families([family])).decode().removesuffix(OPENMETRICS_EOF))
        for family in check_families({})
    )


def number(value: float) -> str:
    """A sample value as prometheus_client writes it (Go's float formatting)."""
    return floatToGoString(value)


def _count(value: int) -> str:
    # floatToGoString(float(n)) for n < 1e6 is "n.0"; the fast path skips its work.
    return f"{value}.0" if 0 <= value < 1_000_000 else floatToGoString(value)


@lru_cache(maxsize=1 << 16)
def _labels(service: str, check: str) -> tuple[str, str]:
    """The label text before and after a third label that sorts between them."""
    # prometheus_client sorts labels by name: check < le < phase < reason < service.
    return f'check="{check}"', f'service="{service}"'


def _gauge_rows(
    name: str, rows: Iterable[Row], value: Callable[[CheckRecord], float | None]
) -> str:
    out = []
    for (service, check), record in rows:
        got = value(record)
        if got is not None:
            left, right = _labels(service, check)
            out.append(f"{name}{{{left},{right}}} {number(got)}\n")
    return "".join(out)


def _last(record: CheckRecord, read: Callable[..., float | None]) -> float | None:
    return None if record.last is None else read(record)


def _histogram(name: str, left: str, right: str, histogram: Histogram) -> str:
    """Buckets, count and sum; `left` and `right`: the labels sorting before and after le."""
    buckets = histogram.cumulative()
    lines = [f'{name}_bucket{{{left},le="{le}",{right}}} {_count(n)}\n' for le, n in buckets]
    lines.append(f"{name}_count{{{left},{right}}} {_count(buckets[-1][1])}\n")
    lines.append(f"{name}_sum{{{left},{right}}} {number(histogram.total)}\n")
    return "".join(lines)


def _phases(name: str, rows: Iterable[Row]) -> str:
    out = []
    for (service, check), record in rows:
        left, right = _labels(service, check)
        for phase, histogram in sorted(record.phases.items(), key=lambda item: item[0].value):
            out.append(_histogram(name, left, f'phase="{phase.value}",{right}', histogram))
    return "".join(out)


def _failures(name: str, rows: Iterable[Row]) -> str:
    out = []
    for (service, check), record in rows:
        left, right = _labels(service, check)
        for reason, count in sorted(record.failures.items(), key=lambda item: item[0].value):
            out.append(f'{name}{{{left},reason="{reason.value}",{right}}} {_count(count)}\n')
    return "".join(out)


def _rcode(record: CheckRecord) -> float | None:
    last = record.last
    found = rcode_number(last.dns_rcode) if last is not None and last.dns_rcode else None
    return None if found is None else float(found)


def _family(rows: list[Row], family: str) -> str:
    """One slice of one family's samples; mirrors metrics.check_families value by value."""
    if family == "meta_probe_phase_duration_seconds":
        return _phases(family, rows)
    if family == "meta_probe_failures":
        return _failures(family + "_total", rows)
    if family == "meta_probes":
        return _gauge_rows(family + "_total", rows, lambda r: float(r.probes_total))
    if family == "meta_probes_judged":
        return _gauge_rows(family + "_total", rows, lambda r: float(r.judged_total))
    if family == "meta_probe_judged_failures":
        return _gauge_rows(family + "_total", rows, lambda r: float(r.judged_failures))
    if family in _META_ONLY:
        read, suffix = _META_ONLY[family]
        return _gauge_rows(family + suffix, rows, lambda r: _meta_only(r, read))
    read = _LAST_VALUES[family]  # KeyError: a family metrics.py has and this file lacks
    return _gauge_rows(family, rows, lambda r: _last(r, read))


_LAST_VALUES: dict[str, Callable[[CheckRecord], float | None]] = {
    "meta_probe_success": lambda r: 1.0 if r.last.success else 0.0,
    "meta_probe_duration_seconds": lambda r: r.last.duration,
    "meta_probe_http_status_code": lambda r: (
        None if r.last.http_status is None else float(r.last.http_status)
    ),
    "meta_probe_http_version": lambda r: (
        None if r.last.http_version is None else float(r.last.http_version)
    ),
    "meta_probe_tls_cert_expiry_timestamp_seconds": lambda r: r.tls_expiry,
    "meta_probe_dns_answer_rrs": lambda r: (
        None if r.last.dns_answers is None else float(r.last.dns_answers)
    ),
    "meta_probe_dns_rcode": _rcode,
    "meta_probe_ip_protocol": lambda r: (
        None if r.last.address_family is None else 6.0 if r.last.address_family == "ipv6" else 4.0
    ),
    "meta_probe_last_probe_timestamp_seconds": lambda r: r.last.started_at,
    "meta_probe_consecutive_failures": lambda r: float(r.consecutive_failures),
}


def _meta_only(record: CheckRecord, read: Callable[[CheckRecord], float]) -> float | None:
    return None if record.spec.service == CONTROL_SERVICE else read(record)


# Families of Meta checks only (the verdict's view): (value, name suffix).
_META_ONLY: dict[str, tuple[Callable[[CheckRecord], float], str]] = {
    "meta_check_failing": (lambda r: 1.0 if r.counted_failing else 0.0, ""),
}


def check_slices(records: Records, openmetrics: bool) -> Iterator[str]:
    """The per-check families as text, one piece per slice of SLICE checks per family."""
    rows = list(records.items())
    for family, header in _headers(openmetrics):
        yield header
        for start in range(0, len(rows), SLICE):
            yield _family(rows[start : start + SLICE], family)


def render(snap: Snapshot, others: Collector, accept: str) -> tuple[AsyncIterator[bytes], str]:
    """The whole exposition for an Accept header, as (body chunks, content type): `others`
    (the registry without the per-check families) by prometheus_client, then the per-check
    families in slices with the event loop free between them. The body streams out in
    chunks: no single join of many megabytes holds the loop either."""
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")
    return _chunks(snap.records, others, encoder, openmetrics), content_type


async def _chunks(
    records: Records, others: Collector, encoder: Callable[[Collector], bytes], openmetrics: bool
) -> AsyncIterator[bytes]:
    head = encoder(others).decode()
    pending = [head.removesuffix(OPENMETRICS_EOF) if openmetrics else head]
    size = 0
    for piece in check_slices(records, openmetrics):
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield "".join(pending).encode()
            pending, size = [], 0
        await asyncio.sleep(0)  # let probes run: their timings must not wait for a scrape
    if openmetrics:
        pending.append(OPENMETRICS_EOF)
    yield "".join(pending).encode()
