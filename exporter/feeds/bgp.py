"""BGP visibility of watched prefixes, from RIS Live UPDATE messages. Pure, bounded state.

A peer (a RIS collector's BGP neighbour) *sees* a watched prefix while it has a route to it
or to a more-specific inside it; it has *withdrawn* it once its last such route is withdrawn.
RIS Live sends no table at subscription time, so only peers heard from since (re)connecting
are known, plus those a RIB snapshot (RIPEstat's looking glass, `seed`) shows with a route. A
prefix counts as withdrawn when at least `min_peers` peers are known and more than
`withdrawn_ratio` of them have withdrawn it: one flapping peer is never an outage.

Without the snapshot, the peers that keep the prefix stay silent and unknown, so a partial
withdrawal (a transit network and its customers) would look like "most peers": the snapshot
is what makes the ratio mean most of the peers that see it.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Bounds, whatever a feed sends: peers remembered per prefix, routes remembered per peer.
MAX_PEERS_PER_PREFIX = 4096
MAX_ROUTES_PER_PEER = 64
# Routes one looking-glass answer may hold: it lists the exact prefix, one route per peer
# session (RIS has about 1500); twice the peers a prefix may hold leaves room.
MAX_SEED_ROUTES = 2 * MAX_PEERS_PER_PREFIX


class MalformedMessage(ValueError):
    """A RIS Live message that does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class PrefixView:
    prefix: str
    seeing: int
    withdrawn: int
    withdrawn_now: bool
    last_withdrawal: float | None
    seeded: bool = False

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
    # Peers that spoke of this very prefix (stream or snapshot), not only of more-specifics:
    # only they can count as having withdrawn it.
    exact: set[str] = field(default_factory=set)
    seeded: bool = False  # a RIB snapshot has named the silent peers since the last clear()


@dataclass(frozen=True, slots=True)
class Update:
    peer: str
    timestamp: float
    announced: tuple[Network, ...]
    withdrawn: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class PeerDown:
    peer: str


def peer_id(collector: str, address: str) -> str:
    """One name per BGP session, the same from both sources: RIS Live says "rrc21" (or a
    host name such as "rrc21.ripe.net"), the looking glass "RRC21"; the same neighbour address
    can peer with several collectors, so each session counts on its own."""
    name = collector.strip().lower()
    if name[:1].isalpha():  # a host name: its first label (an IP literal stays whole)
        name = name.split(".", 1)[0]
    # An odd peer name is not ours to judge: it is still a distinct peer.
    with contextlib.suppress(ValueError):
        address = str(ipaddress.ip_address(address.strip()))
    return f"{name}/{address}"


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
    session = peer_id(host, peer)
    if data.get("type") == "RIS_PEER_STATE":
        return PeerDown(session) if data.get("state") in ("down", "connected") else None
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
    return Update(session, float(timestamp), tuple(announced), tuple(withdrawn))


def parse_looking_glass(document: Any) -> list[tuple[str, Network]]:
    """(peer, route) pairs from a RIPEstat looking-glass answer:
    data.rrcs[].{rrc, peers[].{peer, prefix}}. Raises MalformedMessage for a bad shape."""
    try:
        rrcs = document["data"]["rrcs"]
    except (KeyError, TypeError):
        raise MalformedMessage("no data.rrcs in the looking-glass answer") from None
    if not isinstance(rrcs, list):
        raise MalformedMessage("data.rrcs: expected a list")
    routes: list[tuple[str, Network]] = []
    for i, rrc in enumerate(rrcs):
        if not isinstance(rrc, dict) or not isinstance(rrc.get("rrc"), str):
            raise MalformedMessage(f"data.rrcs[{i}]: expected an object with an 'rrc' name")
        entries = rrc.get("peers", [])
        if not isinstance(entries, list):
            raise MalformedMessage(f"data.rrcs[{i}].peers: expected a list")
        for j, entry in enumerate(entries):
            where = f"data.rrcs[{i}].peers[{j}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("peer"), str):
                raise MalformedMessage(f"{where}: expected an object with a 'peer' address")
            routes.append(
                (peer_id(rrc["rrc"], entry["peer"]), _network(entry.get("prefix"), where))
            )
            if len(routes) > MAX_SEED_ROUTES:
                raise MalformedMessage(f"more than {MAX_SEED_ROUTES} routes in one answer")
    return routes


class PrefixTable:
    """Per watched prefix: which peers see it. Memory is bounded by the constants above."""

    def __init__(
        self,
        prefixes: Iterable[str],
        *,
        min_peers: int,
        withdrawn_ratio: float,
        require_seed: bool = False,
    ) -> None:
        self.min_peers = min_peers
        self.withdrawn_ratio = withdrawn_ratio
        # With a seed configured, a prefix never counts as withdrawn before its snapshot:
        # until then the silent peers are unknown and "most peers" would mean "most talkers".
        self.require_seed = require_seed
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
            state.exact.clear()
            state.seeded = False

    def apply(self, event: Update | PeerDown) -> None:
        if isinstance(event, PeerDown):
            for state in self._states.values():
                state.routes.pop(event.peer, None)
                state.exact.discard(event.peer)
            return
        for state in self._states.values():
            mine_up = [n for n in event.announced if _inside(n, state.network)]
            mine_down = [n for n in event.withdrawn if _inside(n, state.network)]
            if not mine_up and not mine_down:
                continue
            exact = state.network in mine_up or state.network in mine_down
            routes = state.routes.get(event.peer)
            if routes is None:
                if not mine_up and not exact:
                    continue  # withdrew a more-specific only: tells nothing of the prefix
                if len(state.routes) >= MAX_PEERS_PER_PREFIX:
                    continue  # the verdict needs most peers, not all: the rest is enough
                routes = state.routes[event.peer] = set()
            if exact:
                state.exact.add(event.peer)
            for network in mine_down:
                routes.discard(str(network))
            for network in mine_up:
                if len(routes) < MAX_ROUTES_PER_PEER:
                    routes.add(str(network))
            if routes:
                continue
            if event.peer not in state.exact:
                # It only ever spoke of more-specifics (traffic engineering): whether it
                # still routes the prefix itself is unknown, so it is not counted.
                del state.routes[event.peer]
                continue
            state.last_withdrawal = event.timestamp

    def seed(self, prefix: str, routes: Iterable[tuple[str, Network]]) -> int:
        """Take a RIB snapshot of one watched prefix (the looking glass answers for the exact
        prefix): the peers it names route it, unless the stream has spoken of this very prefix
        since (the stream is newer). A peer the stream knows only through more-specifics gets
        the prefix added. An empty snapshot counts too: nobody routed it, so whoever does
        later must announce it on the stream. From then on the prefix can count as withdrawn
        (see `require_seed`). Returns how many peers were added."""
        state = self._states[prefix]
        spoken = set(state.exact)  # of this very prefix, on the stream: newer than the snapshot
        added = 0
        for peer, network in routes:
            if not _inside(network, state.network) or peer in spoken:
                continue
            peer_routes = state.routes.get(peer)
            if peer_routes is None:
                if len(state.routes) >= MAX_PEERS_PER_PREFIX:
                    continue
                peer_routes = state.routes[peer] = set()
                added += 1
            if len(peer_routes) < MAX_ROUTES_PER_PEER:
                peer_routes.add(str(network))
            if network == state.network:
                state.exact.add(peer)
        state.seeded = True
        return added

    def view(self, prefix: str) -> PrefixView:
        state = self._states[prefix]
        seeing = sum(1 for routes in state.routes.values() if routes)
        withdrawn = len(state.routes) - seeing
        known = seeing + withdrawn
        judged = state.seeded or not self.require_seed
        return PrefixView(
            prefix,
            seeing,
            withdrawn,
            judged and known >= self.min_peers and withdrawn > self.withdrawn_ratio * known,
            state.last_withdrawal,
            state.seeded,
        )

    def views(self) -> dict[str, PrefixView]:
        return {prefix: self.view(prefix) for prefix in self._states}


def _inside(network: Network, watched: Network) -> bool:
    return network.version == watched.version and network.subnet_of(watched)  # type: ignore[arg-type]


def withdrawn_set(views: Mapping[str, PrefixView]) -> frozenset[str]:
    return frozenset(prefix for prefix, view in views.items() if view.withdrawn_now)
