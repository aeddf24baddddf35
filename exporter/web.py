"""HTTP endpoints: /metrics, /api/v1/status, /, /-/healthy, /-/ready, POST /-/reload.

An aiohttp app factory; the runtime (probing in the background) is started and stopped by
cleanup_ctx, so the app owns its background work as aiohttp recommends.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from . import __version__
from .metrics import build_registry
from .runtime import ConfigLoader, Runtime, Snapshot
from .store import CheckRecord

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
            "tls_version": last.tls_version,
            "tls_cert_expiry": iso(last.tls_expiry),
            "dns_rcode": last.dns_rcode,
            "dns_answers": last.dns_answers,
            "address_family": last.address_family,
        }
    return data


def status_document(snap: Snapshot) -> dict[str, Any]:
    """The /api/v1/status body (documented in README, "Status API")."""
    services = []
    for service in snap.config.services:
        state = snap.services.get(service.name)
        entry: dict[str, Any] = {
            "name": service.name,
            "display_name": service.display_name,
            "control": service.is_control,
            "checks": [
                _check_json(snap.records[c.key]) for c in service.checks if c.key in snap.records
            ],
        }
        if state is not None:
            entry.update(
                status=state.status.value,
                layer=state.layer.value,
                since=iso(state.since),
                since_timestamp=state.since,
                detail=state.detail,
            )
        services.append(entry)
    return {
        "generated_at": iso(datetime.now(UTC).timestamp()),
        "version": __version__,
        "ready": snap.ready,
        "vantage": {"up": snap.vantage.up, "detail": snap.vantage.detail},
        "config": {
            "source": snap.config.source,
            "last_reload_successful": snap.reload_successful,
            "last_reload_success": iso(snap.reload_success_time),
        },
        "services": services,
    }


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def status_api(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app[RUNTIME].snapshot()))


async def healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[RUNTIME].store.all_ran():
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready: some checks have not been probed yet.\n")


async def reload(request: web.Request) -> web.Response:
    ok, message = await request.app[RUNTIME].reload(request.app[LOADER])
    return web.Response(status=200 if ok else 500, text=message + "\n")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="15">
<title>Meta outage exporter</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem;max-width:60rem}}
td,th{{padding:.2rem .6rem;text-align:left}}</style></head>
<body><h1>Meta outage exporter</h1>
<p><strong>{vantage}</strong></p>
<table><thead><tr><th>Service</th><th>Status</th><th>Layer</th><th>Since</th><th>Detail</th></tr></thead>
<tbody>{rows}</tbody></table>
<p><a href="/metrics">/metrics</a> · <a href="/api/v1/status">/api/v1/status</a> ·
<a href="/-/ready">/-/ready</a> · version {version}</p></body></html>
"""


async def landing(request: web.Request) -> web.Response:
    snap = request.app[RUNTIME].snapshot()
    vantage = (
        "This vantage's network looks healthy."
        if snap.vantage.up
        else "The problem is on this side: " + snap.vantage.detail
    )
    rows = []
    for service in snap.config.meta_services:
        state = snap.services.get(service.name)
        if state is None:
            continue
        cells = (
            service.display_name,
            state.status.value.upper(),
            state.layer.value,
            iso(state.since) or "",
            state.detail,
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    page = _PAGE.format(vantage=html.escape(vantage), rows="".join(rows), version=__version__)
    return web.Response(text=page, content_type="text/html")


def init_app(
    runtime: Runtime, loader: ConfigLoader, *, start_probing: bool = True
) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    app[LOADER] = loader
    app[REGISTRY] = build_registry(runtime.snapshot)
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", status_api)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_put("/-/reload", reload)

    async def probing(app: web.Application) -> AsyncIterator[None]:
        if start_probing:
            app[RUNTIME].start()
        yield
        await app[RUNTIME].stop()

    app.cleanup_ctx.append(probing)
    return app
