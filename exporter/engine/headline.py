"""The one sentence a person reads first: is it Meta, which product, which layer, since when
- or is it us? A pure function of the verdicts; the status page, the JSON `headline` field
and `check` all show it.

Wording rules:
- Our own network first: when the control checks fail, nothing is known about Meta, and
  the sentence says the problem is on this side without claiming Meta is fine.
- A network that blocks QUIC is said last, as a fact that leaves the level alone: Meta's
  HTTP/3 checks are not judged, everything else is.
- Down before degraded before not judged; services sharing a status and layer are grouped
  ("Every Meta service is down at DNS since 15:40 UTC").
- Times are UTC; the date is added when it is not today's (UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from exporter.model import Layer, Status

from .verdict import ServiceState, VantageHealth

Level = Literal["ok", "degraded", "down", "local", "unknown"]

VANTAGE_DOWN = (
    "The problem is on your side: this network cannot reach the non-Meta control sites, "
    "so Meta cannot be checked from here"
)
RESOLVER_DOWN = (
    "The problem is on your side: this network's DNS resolver is failing, "
    "so DNS failures are not blamed on Meta"
)
QUIC_BLOCKED = "this network blocks QUIC (HTTP/3), so Meta's HTTP/3 checks are not judged from here"
STARTING = "Checking: the first probes have not finished yet"
ALL_UP = "All Meta services are up"
NONE_CONFIGURED = "No Meta services are configured"

# Names listed in full up to this many; more become "5 Meta services".
MAX_NAMES = 3


@dataclass(frozen=True, slots=True)
class Headline:
    level: Level
    text: str


def utc_time(timestamp: float, now: float, *, seconds: bool = False) -> str:
    """'14:02 UTC'; '4 Oct 14:02 UTC' on another day; '4 Oct 2021 14:02 UTC' in another year."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    today = datetime.fromtimestamp(now, UTC)
    clock = moment.strftime("%H:%M:%S UTC" if seconds else "%H:%M UTC")
    if moment.date() == today.date():
        return clock
    day = f"{moment.day} {moment.strftime('%b')}"
    if moment.year != today.year:
        day += f" {moment.year}"
    return f"{day} {clock}"


def layer_label(layer: Layer) -> str:
    return "the content layer" if layer is Layer.CONTENT else layer.value.upper()


def join_names(names: Sequence[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    if len(names) < 2:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _subject(names: Sequence[str], total: int) -> tuple[str, bool]:
    """The grammatical subject for a group of services, and whether it is plural."""
    if len(names) == total and total > 1:
        return "Every Meta service", False
    if len(names) > MAX_NAMES:
        return f"{len(names)} Meta services", True
    return join_names(names), len(names) > 1


def _condition(status: Status, layer: Layer) -> str:
    if status is Status.DEGRADED and layer is Layer.NONE:
        return "slow"  # degraded with no failing layer: only latency is over its threshold
    if layer is Layer.NONE:
        return status.value
    return f"{status.value} at {layer_label(layer)}"


def _rank(layer: Layer) -> int:
    return layer.rank


def _group_phrases(group: Sequence[tuple[str, ServiceState]], total: int, now: float) -> list[str]:
    """One phrase per layer among services of one status; more than two layers: one phrase."""
    status = group[0][1].status
    by_layer: dict[Layer, list[tuple[str, ServiceState]]] = {}
    for name, state in group:
        by_layer.setdefault(state.layer, []).append((name, state))
    if len(by_layer) > 2:
        subject, plural = _subject([name for name, _ in group], total)
        layers = join_names([layer_label(layer) for layer in sorted(by_layer, key=_rank)])
        since = utc_time(min(state.since for _, state in group), now)
        verb = "are" if plural else "is"
        return [f"{subject} {verb} {status.value} (at {layers}) since {since}"]
    phrases = []
    for layer in sorted(by_layer, key=_rank):
        members = by_layer[layer]
        subject, plural = _subject([name for name, _ in members], total)
        since = utc_time(min(state.since for _, state in members), now)
        verb = "are" if plural else "is"
        phrases.append(f"{subject} {verb} {_condition(status, layer)} since {since}")
    return phrases


def headline(
    vantage: VantageHealth,
    services: Sequence[tuple[str, ServiceState]],
    *,
    ready: bool,
    now: float,
) -> Headline:
    """`services`: (display name, state) of every Meta service, in catalogue order."""
    if not vantage.up:
        return Headline("local", VANTAGE_DOWN)
    if not services:
        return Headline("unknown", NONE_CONFIGURED)
    total = len(services)
    by_status: dict[Status, list[tuple[str, ServiceState]]] = {}
    for name, state in services:
        by_status.setdefault(state.status, []).append((name, state))
    unknown = by_status.get(Status.UNKNOWN, [])
    if not ready and len(unknown) == total:
        return Headline("unknown", STARTING)

    parts: list[str] = []
    level: Level = "ok"
    if not vantage.dns_ok:
        parts.append(RESOLVER_DOWN)
        level = "local"
    for status in (Status.DOWN, Status.DEGRADED):
        group = by_status.get(status)
        if group:
            parts.extend(_group_phrases(group, total, now))
            if level == "ok":
                level = "down" if status is Status.DOWN else "degraded"
    # With our resolver failing, services not judged are explained by the sentence above.
    if unknown and vantage.dns_ok:
        subject, plural = _subject([name for name, _ in unknown], total)
        verb = "are" if plural else "is"
        parts.append(f"{subject} {verb} {'not judged' if ready else 'not checked yet'}")
        if level == "ok":
            level = "unknown"
    if not parts:
        parts.append(ALL_UP)
    if not vantage.quic_ok:  # a fact about this network, not an alarm: the level stays
        parts.append(QUIC_BLOCKED)
    return Headline(level, "; ".join(parts))
