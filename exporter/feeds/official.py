"""Meta's official status page (metastatus.com orgs.json): parsing and mapping. Pure.

The document is undocumented; its shape, as third-party clients read it, is
`[{id, name, services: [{id, name, status, time}]}]`. Status strings map onto a fixed enum;
a string we do not know maps to UNKNOWN (the caller logs each new one once), never to a
guess. Disruptions are timed by when this exporter first saw them (precision: the poll
interval), because the page's own `time` field has no documented meaning.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Bounds, whatever the page sends: orgs and services per org kept, text length kept.
MAX_ORGS = 100
MAX_SERVICES_PER_ORG = 100
MAX_TEXT = 200


class OfficialStatus(enum.Enum):
    NO_ISSUES = "no_issues"
    LOW = "low_disruption"
    MEDIUM = "medium_disruption"
    MAJOR = "major_disruption"
    UNKNOWN = "unknown"

    @property
    def disrupted(self) -> bool:
        return self in (OfficialStatus.LOW, OfficialStatus.MEDIUM, OfficialStatus.MAJOR)

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    OfficialStatus.UNKNOWN: 0,
    OfficialStatus.NO_ISSUES: 1,
    OfficialStatus.LOW: 2,
    OfficialStatus.MEDIUM: 3,
    OfficialStatus.MAJOR: 4,
}

# Lower-cased status strings seen on the page. "Resolved" closes an incident: no issue now.
_KNOWN = {
    "no known issues": OfficialStatus.NO_ISSUES,
    "resolved": OfficialStatus.NO_ISSUES,
    "low disruptions": OfficialStatus.LOW,
    "medium disruptions": OfficialStatus.MEDIUM,
    "major disruptions": OfficialStatus.MAJOR,
}


def map_status(text: str) -> OfficialStatus:
    return _KNOWN.get(" ".join(text.split()).lower(), OfficialStatus.UNKNOWN)


class MalformedDocument(ValueError):
    """orgs.json does not have the expected shape; the message says where."""


@dataclass(frozen=True, slots=True)
class Component:
    """One service of one status org (e.g. org facebook-login, service 'Facebook Login')."""

    org: str
    component: str
    name: str
    text: str
    status: OfficialStatus


def _text(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise MalformedDocument(f"{where}: expected a non-empty string")
    return value[:MAX_TEXT]


def parse_orgs(document: Any) -> list[Component]:
    """Components from a decoded orgs.json. Raises MalformedDocument naming the bad place."""
    if not isinstance(document, list):
        raise MalformedDocument("top level: expected a list of status orgs")
    components: list[Component] = []
    for i, org in enumerate(document[:MAX_ORGS]):
        where = f"[{i}]"
        if not isinstance(org, dict):
            raise MalformedDocument(f"{where}: expected an object")
        org_id = _text(org.get("id"), f"{where}.id")
        services = org.get("services")
        if not isinstance(services, list):
            raise MalformedDocument(f"{where}.services: expected a list")
        for j, service in enumerate(services[:MAX_SERVICES_PER_ORG]):
            here = f"{where}.services[{j}]"
            if not isinstance(service, dict):
                raise MalformedDocument(f"{here}: expected an object")
            text = _text(service.get("status"), f"{here}.status")
            components.append(
                Component(
                    org=org_id,
                    component=_text(service.get("id"), f"{here}.id"),
                    name=_text(service.get("name", service.get("id")), f"{here}.name"),
                    text=text,
                    status=map_status(text),
                )
            )
    return components


@dataclass(frozen=True, slots=True)
class Board:
    """What the page said at the last good poll, and since when each disruption is seen."""

    components: tuple[Component, ...] = ()
    # (org, component) -> when this exporter first saw it disrupted (cleared when it recovers)
    disrupted_since: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def orgs(self) -> set[str]:
        return {c.org for c in self.components}


def next_board(previous: Board, components: Iterable[Component], now: float) -> Board:
    """The board after a poll: a disruption keeps its first-seen time while it lasts."""
    fresh = tuple(components)
    since = {}
    for c in fresh:
        if c.status.disrupted:
            key = (c.org, c.component)
            since[key] = previous.disrupted_since.get(key, now)
    return Board(fresh, since)


@dataclass(frozen=True, slots=True)
class ServiceOfficial:
    """The official word on one catalogue service: the worst of its status orgs."""

    status: OfficialStatus
    # When the page first showed any of the service's orgs disrupted (None: not disrupted).
    disrupted_since: float | None
    detail: str


def service_official(orgs: Iterable[str], board: Board) -> ServiceOfficial | None:
    """None when the service names no status org; UNKNOWN when the page lacks them all."""
    wanted = set(orgs)
    if not wanted:
        return None
    mine = [c for c in board.components if c.org in wanted]
    if not mine:
        return ServiceOfficial(OfficialStatus.UNKNOWN, None, "not on the official status page")
    worst = max(mine, key=lambda c: c.status.severity)
    times = [board.disrupted_since[(c.org, c.component)] for c in mine if c.status.disrupted]
    detail = f"{worst.org}/{worst.name}: {worst.text}"
    return ServiceOfficial(worst.status, min(times) if times else None, detail)


def acknowledgement_lag(
    our_down_since: float | None, official: ServiceOfficial | None
) -> float | None:
    """Seconds from our DOWN verdict to the page admitting a disruption (negative when the
    page said it first); None unless both say so now."""
    if our_down_since is None or official is None or official.disrupted_since is None:
        return None
    return official.disrupted_since - our_down_since
