"""HTTP endpoints: /metrics, /api/v1/status, /api/v1/history, / (status page), /-/healthy,
/-/ready, POST /-/reload, /probe (exporter/web/probe_endpoint.py); basic auth (webauth.py).

An aiohttp app factory; the runtime (probing in the background) is started and stopped by
cleanup_ctx, so the app owns its background work as aiohttp recommends.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp.payload import AsyncIterablePayload
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.engine.headline import headline
from exporter.engine.history import VANTAGE, History, Segment
from exporter.engine.runtime import ConfigLoader, Runtime, Snapshot
from exporter.engine.store import CheckRecord

from . import exposition, probe_endpoint, statuspage, webauth
from .feedreport import feeds_document
from .metrics import build_registry

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
REGISTRY = web.AppKey("registry", CollectorRegistry)
LOADER = web.AppKey("loader", Callable[[], Any])


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _check_json(record: CheckRecord) -> dict[str, Any]:
    spec, last = record.spec, record.last
    data: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "critical": spec.critical,
        "ip_family": spec.ip_family,
        "description": spec.description,
        "probes_total": record.probes_total,
        "consecutive_failures": record.consecutive_failures,
        "last_result": None,
    }
    if last is not None:
        data["last_result"] = {
            "success": last.success,
            "reason": last.reason.value,
            "layer": last.layer.value,
            "detail": last.detail,
            "started_at": iso(last.started_at),
            "duration_seconds": round(last.duration, 6),
            "phases": {phase.value: round(seconds, 6) for phase, seconds in last.phases.items()},
            "http_status": last.http_status,
            "http_version": last.http_version,
            "tls_version": last.tls_version,
            "tls_cert_expiry": iso(last.tls_expiry),
            "dns_rcode": last.dns_rcode,
            "dns_answers": last.dns_answers,
            "address_family": last.address_family,
        }
    return data


def service_latency(records: list[CheckRecord]) -> float | None:
    """The slowest last successful probe among a service's checks (what a user waits for)."""
    return max((r.last.duration for r in records if r.last and r.last.success), default=None)


def status_document(snap: Snapshot) -> dict[str, Any]:
    """The /api/v1/status body (documented in docs/http-api.md, "Status API")."""
    now = datetime.now(UTC).timestamp()
    services = []
    for service in snap.config.services:
        state = snap.services.get(service.name)
        records = [snap.records[c.key] for c in service.checks if c.key in snap.records]
        entry: dict[str, Any] = {
            "name": service.name,
            "display_name": service.display_name,
            "control": service.is_control,
            "checks": [_check_json(record) for record in records],
        }
        if state is not None:
            latency = service_latency(records)
            entry.update(
                status=state.status.value,
                layer=state.layer.value,
                since=iso(state.since),
                since_timestamp=state.since,
                detail=state.detail,
                latency_seconds=None if latency is None else round(latency, 6),
            )
        services.append(entry)
    meta = [
        (s.display_name, snap.services[s.name])
        for s in snap.config.meta_services
        if s.name in snap.services
    ]
    summary = headline(snap.vantage, meta, ready=snap.ready, now=now)
    return {
        "generated_at": iso(now),
        "version": __version__,
        "ready": snap.ready,
        "headline": {"level": summary.level, "text": summary.text},
        "vantage": {
            "up": snap.vantage.up,
            "settled": snap.vantage.settled,
            "detail": snap.vantage.detail,
            # False: our resolver fails, or this network blocks QUIC; failures at that layer
            # are not judged (the detail says which).
            "dns_ok": snap.vantage.dns_ok,
            "quic_ok": snap.vantage.quic_ok,
            # When it last came back from down: Meta results probed before never count.
            "recovered_at": iso(snap.vantage.recovered_at)
            if math.isfinite(snap.vantage.recovered_at)
            else None,
        },
        "config": {
            "source": snap.config.source,
            "last_reload_successful": snap.reload_successful,
            "last_reload_success": iso(snap.reload_success_time),
        },
        "services": services,
        "feeds": feeds_document(snap.feeds, snap.config, snap.services, iso),
    }


def _segment_json(segment: Segment) -> dict[str, Any]:
    return {
        "status": segment.status.value,
        "layer": segment.layer.value,
        "start": iso(segment.start),
        "start_timestamp": segment.start,
        "end": iso(segment.end),
        "end_timestamp": segment.end,
    }


def history_document(snap: Snapshot, history: History, now: float) -> dict[str, Any]:
    """The /api/v1/history body (docs/http-api.md, "History API"): status changes in the window."""
    return {
        "generated_at": iso(now),
        "now_timestamp": now,
        "window_seconds": history.window,
        "started_at": iso(snap.started_at),
        "started_at_timestamp": snap.started_at,
        "vantage": {"segments": [_segment_json(s) for s in history.segments(VANTAGE, now)]},
        "services": [
            {
                "name": service.name,
                "display_name": service.display_name,
                "segments": [_segment_json(s) for s in history.segments(service.name, now)],
            }
            for service in snap.config.meta_services
        ],
    }


async def metrics(request: web.Request) -> web.Response:
    # The per-check families are rendered apart, in slices (exporter/web/exposition.py).
    snapshot = request.app[RUNTIME].snapshot()
    accept = request.headers.get("Accept", "")
    chunks, content_type = exposition.render(snapshot, request.app[REGISTRY], accept)
    return web.Response(body=AsyncIterablePayload(chunks), headers={"Content-Type": content_type})


async def status_api(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app[RUNTIME].snapshot()))


async def history_api(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    document = history_document(runtime.snapshot(), runtime.history, runtime.clock())
    return web.json_response(document)


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[RUNTIME].store.all_ran():
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: some checks have not been probed yet.\n")


async def reload(request: web.Request) -> web.Response:
    ok, message = await request.app[RUNTIME].reload(request.app[LOADER])
    return web.Response(status=200 if ok else 500, text=message + "\n")


async def status_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    snap = runtime.snapshot()
    page = statuspage.render(
        status_document(snap), history_document(snap, runtime.history, runtime.clock())
    )
    return web.Response(text=page, content_type="text/html", headers=statuspage.HEADERS)


async def no_favicon(_: web.Request) -> web.Response:
    """Browsers ask for one; an empty answer keeps their consoles free of 404s."""
    return web.Response(status=204)


def init_app(
    runtime: Runtime,
    loader: ConfigLoader,
    *,
    start_probing: bool = True,
    auth: webauth.BasicAuth | None = None,
    extra_collectors: Iterable[Collector] = (),
) -> web.Application:
    # Basic auth (--web.config.file) covers every route, /-/healthy and 404s included.
    app = web.Application(middlewares=webauth.middlewares(auth))
    app[RUNTIME] = runtime
    app[LOADER] = loader
    app[REGISTRY] = build_registry(runtime.snapshot, checks=False)
    for collector in extra_collectors:
        app[REGISTRY].register(collector)
    app.router.add_get("/", status_page)
    app.router.add_get("/favicon.ico", no_favicon)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", status_api)
    app.router.add_get("/api/v1/history", history_api)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)
    probe_endpoint.setup(app, runtime)

    async def probing(app: web.Application) -> AsyncIterator[None]:
        if start_probing:
            app[RUNTIME].start()
        yield
        await app[RUNTIME].stop()

    app.cleanup_ctx.append(probing)
    return app
