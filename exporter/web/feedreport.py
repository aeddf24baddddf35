"""The feeds as JSON for /api/v1/status and the status page: what each feed says, and
whether it could be read at all. Pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from exporter.engine.verdict import ServiceState
from exporter.feeds.feedset import FeedsView
from exporter.feeds.official import Board, ServiceOfficial, acknowledgement_lag, service_official
from exporter.model import Status
from exporter.spec import Config


def official_by_service(
    board: Board, config: Config, services: Mapping[str, ServiceState]
) -> list[tuple[str, ServiceOfficial, float | None]]:
    """(service, the page's word on it, acknowledgement lag) for services with status orgs."""
    rows = []
    for service in config.meta_services:
        official = service_official(service.status_orgs, board)
        if official is None:
            continue
        state = services.get(service.name)
        down_since = state.since if state and state.status is Status.DOWN else None
        rows.append((service.name, official, acknowledgement_lag(down_since, official)))
    return rows


def feeds_document(
    view: FeedsView,
    config: Config,
    services: Mapping[str, ServiceState],
    iso: Callable[[float | None], str | None],
) -> dict[str, Any]:
    """{"health": [...], "official": {...} | None, "bgp": {...} | None}."""
    document: dict[str, Any] = {
        "health": [
            {
                "feed": h.name,
                "up": h.up,
                "detail": h.detail,
                "last_success": iso(h.last_success),
                "errors": {
                    e.value: n for e, n in sorted(h.errors.items(), key=lambda i: i[0].value)
                },
            }
            for h in view.health
        ],
        "official": None,
        "bgp": None,
    }
    if view.official is not None:
        board = view.official
        per_service = {
            name: {
                "status": official.status.value,
                "detail": official.detail,
                "disrupted_since": iso(official.disrupted_since),
                "acknowledgement_lag_seconds": None if lag is None else round(lag, 1),
            }
            for name, official, lag in official_by_service(board, config, services)
        }
        document["official"] = {
            "services": per_service,
            "components": [
                {
                    "org": c.org,
                    "component": c.component,
                    "name": c.name,
                    "text": c.text,
                    "status": c.status.value,
                    "disrupted_since": iso(board.disrupted_since.get((c.org, c.component))),
                }
                for c in board.components
            ],
        }
    if config.bgp is not None:
        document["bgp"] = {
            "connected": view.bgp is not None,
            "prefixes": [
                {
                    "prefix": p.prefix,
                    "peers_seeing": p.seeing,
                    "peers_withdrawn": p.withdrawn,
                    "withdrawn": p.withdrawn_now,
                    "seeded": p.seeded,
                    "last_withdrawal": iso(p.last_withdrawal),
                }
                for p in (view.bgp or {}).values()
            ],
        }
    return document
