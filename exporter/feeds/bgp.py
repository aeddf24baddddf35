"""BGP visibility of watched prefixes, from RIS Live UPDATE messages. Pure, bounded state.

A peer (a RIS collector's BGP neighbour) *sees* a watched prefix while it has a route to it
or to a more-specific inside it; it has *withdrawn* it once its last such route is withdrawn.
RIS Live sends no table at subscription time, so only peers heard from since (re)connecting
are known. A prefix counts as withdrawn when at least `min_peers` peers are known and more
than `withdrawn_ratio` of them have withdrawn it: one flapping peer is never an outage.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Bounds, whatever a feed sends: peers remembered per prefix, routes remembered per peer.
MAX_PEERS_PER_PREFIX = 4096
MAX_ROUTES_PER_PEER = 64


class MalformedMessage(ValueError):
    """A RIS Live message that does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class PrefixView:
    prefix: str
    seeing: int
    withdrawn: int
    withdrawn_now: bool
    last_withdrawal: float | None

    @property
    def known(self) -> int:
        return self.seeing + self.withdrawn

    @property
    def visibility(self) -> float | None:
        return self.seeing / self.known if self.known else None


@dataclass(slots=True)
class _PrefixState:
    network: Network
    # peer -> the routes (this prefix or more-specifics) it currently announces; empty = withdrawn
    routes: dict[str, set[str]] = field(default_factory=dict)
    last_withdrawal: float | None = None


@dataclass(frozen=True, slots=True)
class Update:
    peer: str
    timestamp: float
    announced: tuple[Network, ...]
    withdrawn: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class PeerDown:
    peer: str


def _network(text: Any, where: str) -> Network:
    if not isinstance(text, str):
        raise MalformedMessage(f"{where}: expected a prefix string, got {type(text).__name__}")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise MalformedMessage(f"{where}: {text[:60]!r} is not a prefix") from None


def _prefixes(value: Any, where: str) -> list[Network]:
    if not isinstance(value, list):
        raise MalformedMessage(f"{where}: expected a list")
    return [_network(item, f"{where}[{index}]") for index, item in enumerate(value)]


def parse_message(message: Any) -> Update | PeerDown | None:
    """An Update or PeerDown from a decoded RIS Live message; None for messages we ignore
    (subscription acks, pongs, keepalives). Raises MalformedMessage for a bad shape."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise MalformedMessage("not an object with a 'type'")
    kind = message["type"]
    if kind == "ris_error":
        raise MalformedMessage(f"ris_error: {str(message.get('data'))[:120]}")
    if kind != "ris_message":
        return None
    data = message.get("data")
    if not isinstance(data, dict):
        raise MalformedMessage("ris_message without a 'data' object")
    peer, host = data.get("peer"), data.get("host", "")
    if not isinstance(peer, str) or not isinstance(host, str):
        raise MalformedMessage("ris_message without a 'peer'")
    # The same neighbour address can peer with several collectors: count each session.
    peer_id = f"{host}/{peer}"
    if data.get("type") == "RIS_PEER_STATE":
        return PeerDown(peer_id) if data.get("state") in ("down", "connected") else None
    if data.get("type") != "UPDATE":
        return None
    timestamp = data.get("timestamp")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise MalformedMessage("UPDATE without a numeric 'timestamp'")
    announced: list[Network] = []
    announcements = data.get("announcements", [])
    if not isinstance(announcements, list):
        raise MalformedMessage("'announcements' is not a list")
    for index, item in enumerate(announcements):
        if not isinstance(item, dict):
            raise MalformedMessage(f"announcements[{index}] is not an object")
        announced.extend(_prefixes(item.get("prefixes"), f"announcements[{index}].prefixes"))
    withdrawn = _prefixes(data.get("withdrawals", []), "withdrawals")
    return Update(peer_id, float(timestamp), tuple(announced), tuple(withdrawn))


class PrefixTable:
    """Per watched prefix: which peers see it. Memory is bounded by the constants above."""

    def __init__(self, prefixes: Iterable[str], *, min_peers: int, withdrawn_ratio: float) -> None:
        self.min_peers = min_peers
        self.withdrawn_ratio = withdrawn_ratio
        self._states = {
            str(net): _PrefixState(net) for net in (ipaddress.ip_network(p) for p in prefixes)
        }

    @property
    def prefixes(self) -> list[str]:
        return list(self._states)

    def clear(self) -> None:
        """Forget every peer (after a reconnect: updates may have been missed meanwhile)."""
        for state in self._states.values():
            state.routes.clear()

    def apply(self, event: Update | PeerDown) -> None:
        if isinstance(event, PeerDown):
            for state in self._states.values():
                state.routes.pop(event.peer, None)
            return
        for state in self._states.values():
            mine_up = [n for n in event.announced if _inside(n, state.network)]
            mine_down = [n for n in event.withdrawn if _inside(n, state.network)]
            if not mine_up and not mine_down:
                continue
            routes = state.routes.get(event.peer)
            if routes is None:
                if len(state.routes) >= MAX_PEERS_PER_PREFIX:
                    continue  # the verdict needs most peers, not all: the rest is enough
                routes = state.routes[event.peer] = set()
            for network in mine_down:
                routes.discard(str(network))
            for network in mine_up:
                if len(routes) < MAX_ROUTES_PER_PEER:
                    routes.add(str(network))
            if mine_down and not routes:
                state.last_withdrawal = event.timestamp

    def view(self, prefix: str) -> PrefixView:
        state = self._states[prefix]
        seeing = sum(1 for routes in state.routes.values() if routes)
        withdrawn = len(state.routes) - seeing
        known = seeing + withdrawn
        return PrefixView(
            prefix,
            seeing,
            withdrawn,
            known >= self.min_peers and withdrawn > self.withdrawn_ratio * known,
            state.last_withdrawal,
        )

    def views(self) -> dict[str, PrefixView]:
        return {prefix: self.view(prefix) for prefix in self._states}


def _inside(network: Network, watched: Network) -> bool:
    return network.version == watched.version and network.subnet_of(watched)  # type: ignore[arg-type]


def withdrawn_set(views: Mapping[str, PrefixView]) -> frozenset[str]:
    return frozenset(prefix for prefix, view in views.items() if view.withdrawn_now)
