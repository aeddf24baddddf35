"""A small, real caching recursive resolver for the simulated Meta lab.

It plays 1.1.1.1 / 8.8.8.8 in outage replays. On 4 October 2021 Meta's authoritative
DNS prefixes were withdrawn; public resolvers kept answering from cache until the
TTLs ran out and then returned SERVFAIL. This resolver does exactly that: no
serve-stale, SERVFAIL as soon as every authoritative server of a zone fails and the
cache holds nothing fresh.

Like unbound's ``stub-zone``, it knows the authoritative servers of a few zones
(the lab has no root) and asks them with RD=0. Names in no stub zone are REFUSED.

Layout, pure first:

* :func:`parse_stubs` / :func:`find_stub`: stub zones and the longest match;
* :func:`digest`: one authoritative response -> a :class:`Step` (bailiwick-scrubbed
  chain part, where the chain continues, the cache lifetime), or ``None`` = ask another
  server;
* :class:`Cache`: steps by (name, type), LRU-bounded, TTLs counted down by a clock;
* :func:`early_rcode` / :func:`build_response`: what the client gets;
* :class:`Recursor`: resolution across zones, in-flight dedupe, counters; the upstream
  exchange is injectable (default: :func:`dnspython_upstream`);
* :class:`RecursorServer`: the UDP+TCP I/O edge.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from exporter.net.dnsclient import udp_exchange

from .dnsserver import (
    UDP_PAYLOAD,
    DnsListener,
    formerr_for,
    parse_query,
    render,
    servfail_for,
)

log = logging.getLogger(__name__)

IN = dns.rdataclass.IN
RdataType = dns.rdatatype.RdataType
Rcode = dns.rcode.Rcode
RRset = dns.rrset.RRset

#: (ip literal, port) of one authoritative server.
Server = tuple[str, int]
#: Cache and in-flight key: the question asked upstream.
Key = tuple[dns.name.Name, RdataType]

#: Most CNAMEs in one answer chain; longer chains (and loops) are SERVFAIL.
MAX_CNAME_HOPS = 8
#: Negative TTL when a negative answer carries no SOA (RFC 2308 would not cache at all).
NEGATIVE_TTL_FALLBACK = 60
#: Caps on cache lifetimes, as unbound's cache-max-ttl / cache-max-negative-ttl.
MAX_CACHE_TTL = 86400
MAX_NEGATIVE_TTL = 3600

_DEFINITE = (Rcode.NOERROR, Rcode.NXDOMAIN)


# --- stub zones ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StubZone:
    """A zone apex and the authoritative servers to ask for names under it, in order."""

    apex: dns.name.Name
    servers: tuple[Server, ...]


def parse_stubs(stubs: Mapping[str, Sequence[tuple[str, int]]]) -> tuple[StubZone, ...]:
    """Validate ``{apex: [(ip, port), ...]}``; IP literals only, the sim never resolves names."""
    parsed: dict[dns.name.Name, StubZone] = {}
    for apex_text, servers in stubs.items():
        apex = _absolute(apex_text)
        if apex in parsed:
            raise ValueError(f"stub zone {apex} given twice")
        if not servers:
            raise ValueError(f"stub zone {apex} has no servers")
        parsed[apex] = StubZone(apex, tuple(_server(apex, s) for s in servers))
    return tuple(parsed.values())


def _server(apex: dns.name.Name, server: tuple[str, int]) -> Server:
    host, port = server
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"stub zone {apex}: {host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError(f"stub zone {apex}: port out of range: {port}")
    return host, port


def find_stub(name: dns.name.Name, stubs: Sequence[StubZone]) -> StubZone | None:
    """The most specific stub zone containing ``name``."""
    candidates = [stub for stub in stubs if name.is_subdomain(stub.apex)]
    return max(candidates, key=lambda stub: len(stub.apex), default=None)


def _absolute(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.concatenate(dns.name.root)
    return dns.name.from_text(name)


# --- one upstream answer -> one step -------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What one zone's servers said about one (name, type), ready to cache.

    ``answer`` is the part of the CNAME chain inside the zone's bailiwick; if the
    chain leaves the zone, ``target`` says where the resolver goes on.
    ``authority`` holds the SOA of a negative answer. ``ttl`` is the cache lifetime.
    """

    rcode: Rcode
    answer: tuple[RRset, ...]
    authority: tuple[RRset, ...]
    target: dns.name.Name | None
    ttl: int

    def aged(self, elapsed: int) -> Step:
        """This step as served ``elapsed`` seconds after it was cached."""
        if elapsed <= 0:
            return self
        return Step(
            self.rcode,
            tuple(_with_ttl(rrset, rrset.ttl - elapsed) for rrset in self.answer),
            tuple(_with_ttl(rrset, rrset.ttl - elapsed) for rrset in self.authority),
            self.target,
            self.ttl - elapsed,
        )


def _with_ttl(rrset: RRset, ttl: int) -> RRset:
    # Copy: cached RRsets are shared between answers and must never change.
    copy = rrset.copy()
    copy.ttl = max(0, ttl)
    return copy


def digest(
    response: dns.message.Message,
    qname: dns.name.Name,
    qtype: RdataType,
    stub: StubZone,
    stubs: Sequence[StubZone],
) -> Step | None:
    """Scrub an answer from ``stub``'s server; ``None`` means "ask the next server".

    Only records inside the zone's bailiwick are kept (another zone's records from
    this server are not trusted: the resolver asks that zone's servers itself).
    """
    if response.rcode() not in _DEFINITE or response.flags & dns.flags.TC:
        return None  # SERVFAIL, REFUSED, ...: this server cannot help
    chain: list[RRset] = []
    name, seen = qname, {qname}
    while True:
        data = _find(response.answer, name, qtype)
        if data is not None:
            return _positive([*chain, data], target=None)
        cname = _find(response.answer, name, RdataType.CNAME)
        if cname is None:
            break
        chain.append(cname)
        name = cname[0].target
        if name in seen or _stub_apex(name, stubs) != stub.apex:
            # Out of bailiwick, or a loop the resolver will notice: go on from there.
            return _positive(chain, target=name)
        seen.add(name)
    if not response.flags & dns.flags.AA:
        return None  # empty and not authoritative: a referral or a lame server
    return _negative(response, chain, name, stub)


def _find(section: Sequence[RRset], name: dns.name.Name, rdtype: int) -> RRset | None:
    # Not Message.get_rrset: that trusts the message's index, which hand-built answers
    # (fakes, tests) do not keep up to date.
    for rrset in section:
        if rrset.name == name and rrset.rdclass == IN and rrset.rdtype == rdtype:
            return rrset
    return None


def _stub_apex(name: dns.name.Name, stubs: Sequence[StubZone]) -> dns.name.Name | None:
    stub = find_stub(name, stubs)
    return None if stub is None else stub.apex


def _positive(chain: list[RRset], *, target: dns.name.Name | None) -> Step:
    ttl = min(rrset.ttl for rrset in chain)
    return Step(Rcode.NOERROR, tuple(chain), (), target, min(ttl, MAX_CACHE_TTL))


def _negative(
    response: dns.message.Message, chain: list[RRset], name: dns.name.Name, stub: StubZone
) -> Step:
    """NXDOMAIN or NODATA, cached for the SOA's negative TTL (RFC 2308 section 5)."""
    soa = _negative_soa(response, name, stub)
    if soa is None:
        negative_ttl, authority = NEGATIVE_TTL_FALLBACK, ()
    else:
        negative_ttl = min(soa.ttl, soa[0].minimum)
        authority = (_with_ttl(soa, negative_ttl),)
    ttl = min([negative_ttl, *(rrset.ttl for rrset in chain)])
    return Step(response.rcode(), tuple(chain), authority, None, min(ttl, MAX_NEGATIVE_TTL))


def _negative_soa(
    response: dns.message.Message, name: dns.name.Name, stub: StubZone
) -> RRset | None:
    for rrset in response.authority:
        in_bailiwick = rrset.name.is_subdomain(stub.apex) and name.is_subdomain(rrset.name)
        if rrset.rdtype == RdataType.SOA and in_bailiwick:
            return rrset
    return None


# --- the cache -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    step: Step
    stored: float
    expires: float


class Cache:
    """Steps by (name, type), at most ``max_entries``, least recently used evicted first.

    The bound is what keeps a client asking random names from growing the cache.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1: {max_entries}")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Step | None:
        """The fresh step with TTLs counted down, or ``None`` (expired entries go)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.step.aged(int(now - entry.stored))

    def put(self, key: Key, step: Step) -> None:
        if step.ttl <= 0:
            return  # TTL 0: use once, never cache (RFC 1035 section 3.2.1)
        now = self._clock()
        self._entries[key] = _Entry(step, now, now + step.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def flush(self, apex: str | dns.name.Name | None = None) -> int:
        """Drop everything, or only names at and under ``apex``; returns how many went."""
        if apex is None:
            count = len(self._entries)
            self._entries.clear()
            return count
        zone = _absolute(apex)
        doomed = [key for key in self._entries if key[0].is_subdomain(zone)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)


# --- what the client gets ------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving one question; ``cached`` = no upstream was involved."""

    rcode: Rcode
    answer: tuple[RRset, ...] = ()
    authority: tuple[RRset, ...] = ()
    cached: bool = False


def early_rcode(query: dns.message.Message) -> Rcode | None:
    """Questions refused before any lookup (``None``: go ahead and resolve)."""
    if query.edns > 0:
        return Rcode.BADVERS  # RFC 6891 section 6.1.3
    if query.opcode() != dns.opcode.QUERY:
        return Rcode.NOTIMP
    if len(query.question) != 1:
        return Rcode.FORMERR
    question = query.question[0]
    if question.rdclass != IN or question.rdtype in (RdataType.AXFR, RdataType.IXFR):
        return Rcode.REFUSED
    if question.rdtype == RdataType.ANY:
        return Rcode.NOTIMP  # RFC 8482 lets resolvers decline ANY; caching it is a mess
    if dns.rdatatype.is_metatype(question.rdtype):
        return Rcode.FORMERR  # OPT, TSIG, ... are not questions
    return None


def build_response(query: dns.message.Message, resolution: Resolution) -> dns.message.Message:
    """A recursive answer: RA=1, RD copied, AA=0 (nothing here is authoritative)."""
    response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
    response.flags |= dns.flags.RA
    response.flags &= ~dns.flags.AA
    response.set_rcode(resolution.rcode)
    response.answer.extend(resolution.answer)
    response.authority.extend(resolution.authority)
    return response


# --- upstream ------------------------------------------------------------------------------


class Upstream(Protocol):
    """One exchange with one authoritative server; raises on timeout or network error."""

    def __call__(
        self, query: dns.message.Message, server: Server, *, timeout: float, tcp: bool
    ) -> Awaitable[dns.message.Message]: ...


async def dnspython_upstream(
    query: dns.message.Message, server: Server, *, timeout: float, tcp: bool
) -> dns.message.Message:
    host, port = server
    if tcp:
        return await dns.asyncquery.tcp(query, host, timeout=timeout, port=port)
    # Connected UDP: a stray datagram from elsewhere never reaches the socket, and a
    # withdrawn route (ICMP unreachable) fails at once, not at the timeout.
    return await udp_exchange(query, host, port, timeout)


def upstream_query(name: dns.name.Name, rdtype: RdataType) -> dns.message.Message:
    """RD=0 (we do the recursion), EDNS with the flag-day payload, a fresh random id."""
    return dns.message.make_query(name, rdtype, use_edns=0, payload=UDP_PAYLOAD, flags=0)


# --- the resolver --------------------------------------------------------------------------


@dataclass
class Counters:
    """Operational counters for the lab; read them, or :meth:`snapshot` for a dict."""

    queries: int = 0  # client questions, rejected ones included
    cache_hits: int = 0  # answered with no upstream query and no wait on one
    upstream_queries: int = 0  # messages sent upstream (a TCP retry counts again)
    upstream_failures: int = 0  # timeouts, network errors, SERVFAIL/REFUSED, lame answers
    coalesced: int = 0  # lookups that joined an identical one already in flight
    servfails: int = 0  # SERVFAIL answers given to clients
    refused: int = 0  # REFUSED answers given to clients

    def snapshot(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0)


@dataclass
class _Flight:
    """One upstream lookup in progress and how many questions wait for it."""

    task: asyncio.Task[Step | None]
    waiters: int = 0


class Recursor:
    """Caching recursive resolution over stub zones; see the module docstring."""

    def __init__(
        self,
        stubs: Mapping[str, Sequence[tuple[str, int]]],
        *,
        upstream_timeout: float = 0.5,
        max_cache_entries: int = 10000,
        clock: Callable[[], float] = time.monotonic,
        upstream: Upstream = dnspython_upstream,
    ) -> None:
        if upstream_timeout <= 0:
            raise ValueError(f"upstream_timeout must be positive: {upstream_timeout}")
        self._stubs = parse_stubs(stubs)
        self._timeout = upstream_timeout
        self._upstream = upstream
        self._cache = Cache(max_cache_entries, clock)
        self._inflight: dict[Key, _Flight] = {}
        self.counters = Counters()

    # -- operational hooks --

    @property
    def stubs(self) -> tuple[StubZone, ...]:
        return self._stubs

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    @property
    def inflight(self) -> int:
        """Upstream lookups in progress (after dedupe)."""
        return len(self._inflight)

    def flush(self, apex: str | dns.name.Name | None = None) -> int:
        """Clear the cache (or one zone of it, like ``unbound-control flush_zone``)."""
        return self._cache.flush(apex)

    # -- entry points --

    async def handle(self, query: dns.message.Message) -> dns.message.Message | None:
        """A client's query in, the response out; ``None`` means drop (it was a response)."""
        if query.flags & dns.flags.QR:
            return None  # never answer a response: that is how reflection loops start
        rcode = early_rcode(query)
        if rcode is not None:
            self.counters.queries += 1
            if rcode == Rcode.REFUSED:
                self.counters.refused += 1
            return build_response(query, Resolution(rcode))
        question = query.question[0]
        return build_response(query, await self.resolve(question.name, question.rdtype))

    async def resolve(self, qname: str | dns.name.Name, qtype: str | int = "A") -> Resolution:
        """Resolve one question from cache or the stub zones' servers; never raises DNS errors."""
        name, rdtype = _absolute(qname), RdataType.make(qtype)
        self.counters.queries += 1
        if find_stub(name, self._stubs) is None:
            self.counters.refused += 1
            return Resolution(Rcode.REFUSED)  # the lab has no root to ask
        resolution = await self._follow(name, rdtype)
        if resolution.rcode == Rcode.SERVFAIL:
            self.counters.servfails += 1
        elif resolution.cached:
            self.counters.cache_hits += 1
        return resolution

    # -- resolution --

    async def _follow(self, qname: dns.name.Name, rdtype: RdataType) -> Resolution:
        """Walk the CNAME chain zone by zone, one step per zone (RFC 1034 section 5.3.3)."""
        answer: list[RRset] = []
        name, seen, cached = qname, {qname}, True
        while True:
            stub = find_stub(name, self._stubs)
            if stub is None:
                return Resolution(Rcode.SERVFAIL)  # the chain leaves every stub zone
            step, hit = await self._step(stub, (name, rdtype))
            if step is None:
                return Resolution(Rcode.SERVFAIL)
            cached = cached and hit
            answer.extend(step.answer)
            if _cname_count(answer) > MAX_CNAME_HOPS:
                return Resolution(Rcode.SERVFAIL)  # too long to follow (or to trust)
            if step.target is None:
                return Resolution(step.rcode, tuple(answer), step.authority, cached)
            seen.update(rrset.name for rrset in step.answer)
            if step.target in seen:
                return Resolution(Rcode.SERVFAIL)  # a CNAME loop
            name = step.target

    async def _step(self, stub: StubZone, key: Key) -> tuple[Step | None, bool]:
        """The step for ``key`` and whether it came from the cache."""
        step = self._cache.get(key)
        if step is not None:
            return step, True
        return await self._join(stub, key), False

    async def _join(self, stub: StubZone, key: Key) -> Step | None:
        """Share one upstream lookup between identical questions (no query storms)."""
        flight = self._inflight.get(key)
        if flight is None:
            flight = _Flight(asyncio.create_task(self._fetch(stub, key)))
            self._inflight[key] = flight
            flight.task.add_done_callback(functools.partial(self._land, key, flight))
        else:
            self.counters.coalesced += 1
        flight.waiters += 1
        try:
            # shield: one asker giving up must not cancel the lookup for the others.
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Every asker gave up (client gone, server closing): stop the upstream work.
                self._land(key, flight)
                flight.task.cancel()

    def _land(self, key: Key, flight: _Flight, _: object = None) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]

    async def _fetch(self, stub: StubZone, key: Key) -> Step | None:
        """Ask the zone's servers in turn; the first usable answer is cached and returned."""
        for server in stub.servers:
            step = await self._ask(stub, server, key)
            if step is not None:
                self._cache.put(key, step)
                return step
        return None  # every server failed: SERVFAIL, and not cached

    async def _ask(self, stub: StubZone, server: Server, key: Key) -> Step | None:
        name, rdtype = key
        query = upstream_query(name, rdtype)
        try:
            response = await self._exchange(query, server)
        except (TimeoutError, OSError, EOFError, dns.exception.DNSException) as exc:
            self.counters.upstream_failures += 1
            log.debug("recursor: %s %s via %s failed: %r", name, rdtype.name, server, exc)
            return None
        step = digest(response, name, rdtype, stub, self._stubs)
        if step is None:
            self.counters.upstream_failures += 1
            log.debug("recursor: %s %s via %s: unusable answer", name, rdtype.name, server)
        return step

    async def _exchange(self, query: dns.message.Message, server: Server) -> dns.message.Message:
        """UDP, then TCP to the same server if truncated, all within one upstream_timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        async with asyncio.timeout_at(deadline):
            response = await self._send(query, server, deadline - loop.time(), tcp=False)
            if response.flags & dns.flags.TC:  # RFC 7766: the full answer comes over TCP
                response = await self._send(query, server, deadline - loop.time(), tcp=True)
        return response

    async def _send(
        self, query: dns.message.Message, server: Server, timeout: float, *, tcp: bool
    ) -> dns.message.Message:
        self.counters.upstream_queries += 1
        response = await self._upstream(query, server, timeout=max(timeout, 0.001), tcp=tcp)
        if not query.is_response(response):
            raise dns.exception.FormError("answer does not match the question")
        return response


def _cname_count(answer: Sequence[RRset]) -> int:
    return sum(rrset.rdtype == RdataType.CNAME for rrset in answer)


# --- the I/O edge --------------------------------------------------------------------------


class RecursorServer:
    """Serve a :class:`Recursor` over UDP and TCP on one port of a loopback (or lab) address.

    ``host`` must be an IP literal. With ``port=0`` an ephemeral port is chosen; read
    it from :attr:`port` after :meth:`start`. At most ``max_pending`` questions are
    resolved at once; datagrams beyond that are dropped (the client retries), as
    unbound does when its request list is full.
    """

    def __init__(
        self,
        recursor: Recursor,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tcp_idle_timeout: float = 5.0,
        max_tcp_connections: int = 64,
        max_pending: int = 1024,
    ) -> None:
        self._listener = DnsListener(
            self.handle,
            host,
            port,
            name="RecursorServer",
            tcp_idle_timeout=tcp_idle_timeout,
            max_tcp_connections=max_tcp_connections,
            max_pending=max_pending,
        )
        self.recursor = recursor

    @property
    def address(self) -> str:
        return self._listener.address

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def dropped(self) -> int:
        """Datagrams dropped because max_pending questions were in progress."""
        return self._listener.dropped

    @dropped.setter
    def dropped(self, value: int) -> None:
        self._listener.dropped = value

    # -- lifecycle --

    async def __aenter__(self) -> RecursorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self._listener.start()
        log.info("dns recursor listening on %s port %d (udp+tcp)", self.address, self.port)

    async def close(self) -> None:
        """Stop listening, abandon questions in progress, end TCP connections; idempotent."""
        await self._listener.close()

    # -- request handling --

    async def handle(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """One message in, at most one message out; never raises (except cancellation)."""
        query = parse_query(wire)
        if query is None:
            return formerr_for(wire)
        try:
            response = await self.recursor.handle(query)
        except Exception:  # a bug must show in the log and as SERVFAIL, not kill the listener
            log.exception("recursor: failed to answer %s", query.question)
            return None if query.flags & dns.flags.QR else servfail_for(query)
        return None if response is None else render(response, query, tcp=tcp)

    def _on_datagram(self, data: bytes, addr: Any) -> None:
        # Where a datagram enters (tests feed it here directly, with no client socket).
        self._listener.on_datagram(data, addr)
