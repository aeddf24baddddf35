"""A small, real authoritative DNS server for tests, the demo mode and the lab.

Built on dnspython's message API and asyncio only. The decision logic is pure:
:func:`answer` maps (query, zones, faults) to a response (or ``None`` = drop), and
:func:`render` turns a response into wire bytes honouring the UDP size limit.
:class:`DnsServer` is the thin I/O edge: counters and run-time switches for zones
and faults, served by :class:`DnsListener` (UDP and TCP on one port), which the
recursor shares.

Scope: authoritative answers for the served zones only (no recursion, no
delegations/referrals, no wildcards, no DNSSEC, no zone transfers).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import ipaddress
import logging
import types
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger(__name__)

IN = dns.rdataclass.IN
RdataType = dns.rdatatype.RdataType

#: EDNS payload we advertise and the most we put in one UDP answer (DNS flag day 2020).
UDP_PAYLOAD = 1232
#: Classic limit for UDP answers to clients that do not speak EDNS.
UDP_LEGACY_SIZE = 512
#: A DNS message over TCP is length-prefixed with 2 bytes, so this is a hard cap.
TCP_MAX_MESSAGE = 65535
#: Longest CNAME chain we follow; real servers cap it too (loops, abuse).
MAX_CNAME_CHAIN = 16
#: Size and TTL of the "huge" fault's answer.
HUGE_COUNT = 1000
HUGE_TTL = 60
#: How often start() retries when the ephemeral UDP port is taken for TCP.
BIND_ATTEMPTS = 5

WILDCARD_FAULT = "*"


class Fault(enum.StrEnum):
    """Failure modes a zone (or every zone, key ``"*"``) can be switched into."""

    SERVFAIL = "servfail"  # rcode SERVFAIL, no data
    REFUSED = "refused"  # rcode REFUSED, like a lame server
    NXDOMAIN = "nxdomain"  # every name "does not exist" (authoritative)
    TIMEOUT = "timeout"  # silence: nothing is sent back
    TRUNCATE = "truncate"  # UDP: TC=1 and no records; TCP answers normally
    HUGE = "huge"  # 1000 A records for the query name, to harden clients

    @classmethod
    def _missing_(cls, value: object) -> Fault | None:
        # Accept "SERVFAIL" as well as "servfail": the lab's fault API passes user text.
        if isinstance(value, str) and value.lower() != value:
            return cls(value.lower())
        return None


# Faults that are only an rcode: no AA flag, no records (the zone is "broken").
_FAULT_RCODES = {Fault.SERVFAIL: dns.rcode.SERVFAIL, Fault.REFUSED: dns.rcode.REFUSED}


class RecordSet(NamedTuple):
    """TTL and rdata (canonical presentation text, absolute names) of one RRset."""

    ttl: int
    rdatas: tuple[str, ...]


RecordKey = tuple[dns.name.Name, RdataType]


@dataclass(frozen=True)
class Zone:
    """One authoritative zone: its apex and records keyed by (owner, rdtype).

    Names compare case-insensitively (dnspython semantics). Build with
    :meth:`from_records`, which validates the data up front so a typo fails the
    test that wrote it rather than producing a confusing answer later.
    """

    origin: dns.name.Name
    records: Mapping[RecordKey, RecordSet]
    # Every existing name incl. empty non-terminals (RFC 8020: those are NODATA).
    names: frozenset[dns.name.Name] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.origin.is_absolute():
            raise ValueError(f"zone origin must be absolute: {self.origin}")
        records = types.MappingProxyType(dict(self.records))
        names = {self.origin}
        for owner, _ in records:
            if not owner.is_subdomain(self.origin):
                raise ValueError(f"{owner} is outside zone {self.origin}")
            while owner != self.origin and owner not in names:
                names.add(owner)
                owner = owner.parent()
        object.__setattr__(self, "records", records)
        object.__setattr__(self, "names", frozenset(names))

    def __hash__(self) -> int:
        # The generated hash would choke on the mapping; zones are values, keep them hashable.
        return hash((self.origin, frozenset(self.records.items())))

    @classmethod
    def from_records(
        cls,
        apex: str | dns.name.Name,
        records: Mapping[str, Iterable[tuple[str | int, int, str]]],
    ) -> Zone:
        """Build a zone from ``{owner: [(type, ttl, rdata text), ...]}``.

        Zone-file conventions: ``"@"`` is the apex, a name ending in ``"."`` is
        absolute, anything else is relative to the apex (so ``"www"`` and
        ``"www.facebook.com."`` are the same owner). Relative names inside rdata
        are completed with the apex too. Several tuples of one type at one owner
        form one RRset and must share a TTL (RFC 2181 section 5.2).
        """
        origin = _absolute(apex)
        merged: dict[RecordKey, RecordSet] = {}
        for owner_text, entries in records.items():
            owner = _owner(owner_text, origin)
            for rdtype_text, ttl, rdata_text in entries:
                key, rdata = _parse_record(owner, rdtype_text, ttl, rdata_text, origin)
                merged[key] = _merge(merged.get(key), key, ttl, rdata)
        _check_cname_exclusive(merged)
        return cls(origin, merged)

    def get(self, name: dns.name.Name, rdtype: RdataType) -> RecordSet | None:
        return self.records.get((name, rdtype))

    def rrset(self, name: dns.name.Name, rdtype: RdataType) -> dns.rrset.RRset | None:
        """The RRset at ``name`` (owner spelled as asked, for 0x20 clients)."""
        found = self.get(name, rdtype)
        return None if found is None else _to_rrset(name, rdtype, found)

    def rrsets_at(self, name: dns.name.Name) -> list[dns.rrset.RRset]:
        """All RRsets at one owner (for ANY queries)."""
        return [
            _to_rrset(name, rdtype, found)
            for (owner, rdtype), found in sorted(self.records.items(), key=lambda kv: kv[0][1])
            if owner == name
        ]

    def negative_soa(self) -> dns.rrset.RRset | None:
        """The SOA for the authority section of NXDOMAIN/NODATA answers.

        Its TTL is min(SOA TTL, SOA MINIMUM) as RFC 2308 section 3 asks.
        """
        found = self.get(self.origin, RdataType.SOA)
        if found is None:
            return None
        soa = dns.rdata.from_text(IN, RdataType.SOA, found.rdatas[0])
        ttl = min(found.ttl, soa.minimum)  # type: ignore[attr-defined]
        return _to_rrset(self.origin, RdataType.SOA, RecordSet(ttl, found.rdatas))

    def contains(self, name: dns.name.Name) -> bool:
        return name.is_subdomain(self.origin)

    def exists(self, name: dns.name.Name) -> bool:
        return name in self.names


def _absolute(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.concatenate(dns.name.root)
    return dns.name.from_text(name)


def _owner(text: str, origin: dns.name.Name) -> dns.name.Name:
    if text in ("@", ""):
        return origin
    return dns.name.from_text(text, origin=origin)


def _parse_record(
    owner: dns.name.Name, rdtype_text: str | int, ttl: int, rdata_text: str, origin: dns.name.Name
) -> tuple[RecordKey, str]:
    rdtype = dns.rdatatype.RdataType.make(rdtype_text)
    if dns.rdatatype.is_metatype(rdtype):
        raise ValueError(f"{owner}: {rdtype.name} cannot be stored in a zone")
    if not 0 <= ttl <= 2**31 - 1:
        raise ValueError(f"{owner} {rdtype.name}: TTL out of range: {ttl}")
    rdata = dns.rdata.from_text(IN, rdtype, rdata_text, origin=origin, relativize=False)
    return (owner, rdtype), rdata.to_text()  # canonical text, names absolute


def _merge(old: RecordSet | None, key: RecordKey, ttl: int, rdata: str) -> RecordSet:
    if old is None:
        return RecordSet(ttl, (rdata,))
    owner, rdtype = key
    if old.ttl != ttl:
        raise ValueError(f"{owner} {rdtype.name}: one RRset, two TTLs ({old.ttl}, {ttl})")
    if rdtype == RdataType.CNAME:
        raise ValueError(f"{owner}: more than one CNAME")
    if rdata in old.rdatas:
        return old
    return RecordSet(ttl, (*old.rdatas, rdata))


def _check_cname_exclusive(records: Mapping[RecordKey, RecordSet]) -> None:
    """A CNAME owner holds no other data (RFC 1034 section 3.6.2)."""
    types_at: dict[dns.name.Name, set[RdataType]] = {}
    for owner, rdtype in records:
        types_at.setdefault(owner, set()).add(rdtype)
    for owner, rdtypes in types_at.items():
        if RdataType.CNAME in rdtypes and len(rdtypes) > 1:
            raise ValueError(f"{owner}: CNAME and other data")


def _to_rrset(name: dns.name.Name, rdtype: RdataType, found: RecordSet) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(name, found.ttl, IN, rdtype, list(found.rdatas))


# --- faults --------------------------------------------------------------------------


def fault_key(apex: str | dns.name.Name) -> str:
    """Normalise a zone apex (or ``"*"``) to the key used in fault mappings."""
    if apex == WILDCARD_FAULT:
        return WILDCARD_FAULT
    return _absolute(apex).canonicalize().to_text()


def normalize_faults(faults: Mapping[str, Fault | str]) -> dict[str, Fault]:
    """Validate fault names and normalise apex spellings ("Facebook.com" == "facebook.com.")."""
    return {fault_key(apex): Fault(fault) for apex, fault in faults.items()}


def _fault_for(zone: Zone | None, faults: Mapping[str, Fault]) -> Fault | None:
    # A zone's own fault wins over the "*" one; "*" also covers names outside all zones,
    # so "*": "timeout" makes the whole server go silent.
    if zone is not None:
        own = faults.get(fault_key(zone.origin))
        if own is not None:
            return own
    return faults.get(WILDCARD_FAULT)


# --- the pure core ---------------------------------------------------------------------


def find_zone(name: dns.name.Name, zones: Iterable[Zone]) -> Zone | None:
    """The most specific zone containing ``name`` (a child zone beats its parent)."""
    candidates = [zone for zone in zones if zone.contains(name)]
    return max(candidates, key=lambda zone: len(zone.origin), default=None)


def answer(
    query: dns.message.Message,
    zones: Iterable[Zone],
    faults: Mapping[str, Fault | str] | None = None,
    *,
    tcp: bool = False,
) -> dns.message.Message | None:
    """Answer ``query`` as an authoritative server for ``zones``; ``None`` means drop.

    ``faults`` maps zone apex (or ``"*"``) to a :class:`Fault`. ``tcp`` tells
    whether the query came over TCP (only the "truncate" fault cares).
    """
    if query.flags & dns.flags.QR:
        return None  # never answer a response: that is how reflection loops start
    served = tuple(zones)
    active = normalize_faults(faults or {})
    response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
    early = _early_rcode(query)
    if early is not None:
        response.set_rcode(early)
        return response
    question = query.question[0]
    zone = find_zone(question.name, served) if question.rdclass == IN else None
    fault = _fault_for(zone, active)
    if fault is Fault.TIMEOUT:
        return None
    if fault in _FAULT_RCODES:
        response.set_rcode(_FAULT_RCODES[fault])
        return response
    if zone is None:
        response.set_rcode(dns.rcode.REFUSED)  # not ours: an authoritative server refuses
        return response
    response.flags |= dns.flags.AA
    _fill(response, question.name, question.rdtype, zone, served, fault)
    if fault is Fault.TRUNCATE and not tcp:
        _truncate(response)
    return response


def _early_rcode(query: dns.message.Message) -> dns.rcode.Rcode | None:
    """Reject what this server does not do, before looking at any zone."""
    if query.edns > 0:
        return dns.rcode.BADVERS  # RFC 6891 section 6.1.3
    if query.opcode() != dns.opcode.QUERY:
        return dns.rcode.NOTIMP  # NOTIFY, UPDATE, ...: not implemented (RFC 1035)
    if len(query.question) != 1:
        return dns.rcode.FORMERR
    rdtype = query.question[0].rdtype
    if rdtype in (RdataType.AXFR, RdataType.IXFR):
        return dns.rcode.REFUSED  # transfers are not allowed, like most public servers
    if dns.rdatatype.is_metatype(rdtype) and rdtype != RdataType.ANY:
        return dns.rcode.FORMERR  # OPT, TSIG, ... are not questions
    return None


def _fill(
    response: dns.message.Message,
    qname: dns.name.Name,
    rdtype: RdataType,
    zone: Zone,
    zones: tuple[Zone, ...],
    fault: Fault | None,
) -> None:
    if fault is Fault.NXDOMAIN:
        _negative(response, zone, dns.rcode.NXDOMAIN)
    elif fault is Fault.HUGE:
        response.answer.append(huge_rrset(qname))
    elif rdtype == RdataType.ANY:
        _fill_any(response, qname, zone)
    else:
        _fill_chain(response, qname, rdtype, zone, zones)


def _fill_any(response: dns.message.Message, qname: dns.name.Name, zone: Zone) -> None:
    rrsets = zone.rrsets_at(qname)
    if rrsets:
        response.answer.extend(rrsets)
    else:
        _negative(response, zone, _missing_rcode(zone, qname))


def _fill_chain(
    response: dns.message.Message,
    qname: dns.name.Name,
    rdtype: RdataType,
    zone: Zone,
    zones: tuple[Zone, ...],
) -> None:
    """Follow CNAMEs through the served zones, putting the chain in the answer section.

    The rcode describes the last name of the chain (RFC 6604): a CNAME to a name
    that does not exist in our zone is NXDOMAIN with the CNAME in the answer.
    """
    name = qname
    seen: set[dns.name.Name] = set()
    while True:
        found = zone.rrset(name, rdtype)
        if found is not None:
            response.answer.append(found)
            return
        cname = zone.rrset(name, RdataType.CNAME)
        if cname is None:
            _negative(response, zone, _missing_rcode(zone, name))
            return
        response.answer.append(cname)
        seen.add(name)
        link = _next_link(cname, seen, zones)
        if link is None:
            return
        name, zone = link


def _next_link(
    cname: dns.rrset.RRset, seen: set[dns.name.Name], zones: tuple[Zone, ...]
) -> tuple[dns.name.Name, Zone] | None:
    """Where the chain goes next; ``None`` stops it (loop, too long, or not our zone).

    Stopping leaves the CNAMEs gathered so far as a NOERROR answer, so the
    client's resolver continues the chain itself, as with a real server.
    """
    target: dns.name.Name = cname[0].target  # type: ignore[attr-defined]
    next_zone = find_zone(target, zones)
    if next_zone is None or target in seen or len(seen) >= MAX_CNAME_CHAIN:
        return None
    return target, next_zone


def _missing_rcode(zone: Zone, name: dns.name.Name) -> dns.rcode.Rcode:
    """NODATA (NOERROR) if the name exists with other types, else NXDOMAIN."""
    return dns.rcode.NOERROR if zone.exists(name) else dns.rcode.NXDOMAIN


def _negative(response: dns.message.Message, zone: Zone, rcode: dns.rcode.Rcode) -> None:
    """NXDOMAIN or NODATA: the zone's SOA goes in authority so caches can cache it."""
    response.set_rcode(rcode)
    soa = zone.negative_soa()
    if soa is not None:
        response.authority.append(soa)


def _truncate(response: dns.message.Message) -> None:
    """Drop all records and set TC: the client must retry over TCP (RFC 7766)."""
    response.answer = []
    response.authority = []
    response.additional = []
    response.flags |= dns.flags.TC


def huge_rrset(name: dns.name.Name) -> dns.rrset.RRset:
    """1000 distinct loopback A records, so nothing real is ever pointed at."""
    addresses = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(HUGE_COUNT)]
    return dns.rrset.from_text_list(name, HUGE_TTL, IN, RdataType.A, addresses)


def udp_limit(query: dns.message.Message) -> int:
    """Largest UDP answer the client accepts: its EDNS payload (capped by ours) or 512."""
    if query.edns < 0:
        return UDP_LEGACY_SIZE
    return max(UDP_LEGACY_SIZE, min(query.payload, UDP_PAYLOAD))


def render(response: dns.message.Message, query: dns.message.Message, *, tcp: bool) -> bytes:
    """Wire bytes for ``response``; if too big for the transport, an empty TC=1 answer."""
    max_size = TCP_MAX_MESSAGE if tcp else udp_limit(query)
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        _truncate(response)
        return response.to_wire(max_size=max_size)


def parse_query(wire: bytes) -> dns.message.Message | None:
    """Parse untrusted bytes; ``None`` if they are not a DNS message we can read."""
    try:
        return dns.message.from_wire(wire)
    except Exception:  # any parse error at all: the server must survive garbage
        return None


def formerr_for(wire: bytes) -> bytes | None:
    """A header-only FORMERR for unparseable bytes, or ``None`` if not even a query header."""
    if len(wire) < 12 or wire[2] & 0x80:  # too short, or the QR bit says it is a response
        return None
    reply = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    reply.flags = dns.flags.QR | (int.from_bytes(wire[2:4], "big") & dns.flags.RD)
    reply.set_opcode(dns.opcode.from_flags(int.from_bytes(wire[2:4], "big")))
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()


def servfail_for(query: dns.message.Message) -> bytes:
    """Used when the server itself fails: a fast, visible error beats a silent drop."""
    response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
    response.set_rcode(dns.rcode.SERVFAIL)
    return response.to_wire()


# --- the I/O edge ------------------------------------------------------------------------


class Handler(Protocol):
    """One DNS message in, at most one out (``None``: send nothing); must not raise."""

    def __call__(self, wire: bytes, *, tcp: bool) -> Awaitable[bytes | None]: ...


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Any], None], name: str) -> None:
        self._on_datagram = on_datagram
        self._name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from clients that went away must not stop the server.
        log.debug("%s: udp error ignored: %s", self._name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class DnsListener:
    """UDP and TCP on one port of a loopback (or lab) address, answering with ``handler``.

    The lifecycle shared by :class:`DnsServer` and the recursor's server. ``host``
    must be an IP literal; with ``port=0`` an ephemeral port is chosen. Each datagram
    is answered in a task of its own, since a handler may await (the recursor asks
    upstream); with ``max_pending`` set, datagrams beyond that many in progress are
    dropped and counted in :attr:`dropped`. ``name`` goes into errors and log lines.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        name: str,
        tcp_idle_timeout: float,
        max_tcp_connections: int,
        max_pending: int | None = None,
    ) -> None:
        ipaddress.ip_address(host)  # fail early on names: the sim never resolves
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._name = name
        self._idle_timeout = tcp_idle_timeout
        self._max_connections = max_tcp_connections
        self._max_pending = max_pending
        self._udp: _UdpProtocol | None = None
        self._tcp: asyncio.Server | None = None
        self._port: int | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[None]] = set()
        self.dropped = 0  # datagrams dropped because max_pending questions were in progress

    @property
    def address(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self._name} is not started")
        return self._port

    async def start(self) -> None:
        if self._udp is not None:
            raise RuntimeError(f"{self._name} is already started")
        for attempt in range(1, BIND_ATTEMPTS + 1):
            udp = await self._bind_udp(self._requested_port)
            port = udp.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self._host, port)
            except OSError as exc:
                await _close_udp(udp)
                # Only an ephemeral port may be traded for another; a fixed one is the user's.
                retry = not self._requested_port and exc.errno == errno.EADDRINUSE
                if not retry or attempt == BIND_ATTEMPTS:
                    raise
                continue
            self._udp, self._port = udp, port
            return

    async def close(self) -> None:
        """Stop listening, abandon questions in progress, end TCP connections; idempotent."""
        udp, tcp, self._udp, self._tcp = self._udp, self._tcp, None, None
        if udp is not None:
            await _close_udp(udp)
        if tcp is not None:
            tcp.close()
        tasks = [*self._pending, *self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tcp is not None:
            await tcp.wait_closed()

    async def _bind_udp(self, port: int) -> _UdpProtocol:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.on_datagram, self._name), local_addr=(self._host, port)
        )
        return protocol

    def on_datagram(self, data: bytes, addr: Any) -> None:
        """Start answering one datagram, or drop it if ``max_pending`` are in progress."""
        if self._max_pending is not None and len(self._pending) >= self._max_pending:
            self.dropped += 1  # the client retries, as with unbound's full request list
            return
        task = asyncio.create_task(self._answer_datagram(data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _answer_datagram(self, data: bytes, addr: Any) -> None:
        reply = await self._handler(data, tcp=False)
        udp = self._udp
        if reply is not None and udp is not None and udp.transport is not None:
            udp.transport.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._connections) >= self._max_connections:
            await _close_writer(writer)
            return
        self._connections.add(task)
        try:
            await self._tcp_loop(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # client went away, sent half a message, or idled: just hang up
        finally:
            self._connections.discard(task)
            await _close_writer(writer)

    async def _tcp_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Several queries per connection (RFC 7766), in order, each within the idle deadline."""
        while True:
            async with asyncio.timeout(self._idle_timeout):
                # The 2-byte length caps a message at 64 KiB: no unbounded read is possible.
                size = int.from_bytes(await reader.readexactly(2), "big")
                if size == 0:
                    return
                wire = await reader.readexactly(size)
            reply = await self._handler(wire, tcp=True)
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                async with asyncio.timeout(self._idle_timeout):
                    await writer.drain()


class DnsServer:
    """Serve ``zones`` over UDP and TCP on one port of a loopback (or lab) address.

    ``host`` must be an IP literal (no name resolution). With ``port=0`` an
    ephemeral port is chosen; read it from :attr:`port` after :meth:`start`.
    """

    def __init__(
        self,
        zones: Zone | Iterable[Zone],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tcp_idle_timeout: float = 5.0,
        max_tcp_connections: int = 64,
    ) -> None:
        self._listener = DnsListener(
            self._serve,
            host,
            port,
            name="DnsServer",
            tcp_idle_timeout=tcp_idle_timeout,
            max_tcp_connections=max_tcp_connections,
        )
        self._zones: tuple[Zone, ...] = ()
        self.set_zones(zones)
        self._faults: dict[str, Fault] = {}
        self.udp_queries = 0
        self.tcp_queries = 0
        self.counts: Counter[tuple[str, str]] = Counter()

    # -- run-time switches (plain data, read by the pure answer()) --

    @property
    def zones(self) -> tuple[Zone, ...]:
        return self._zones

    def set_zones(self, zones: Zone | Iterable[Zone]) -> None:
        """Replace all zones at once; the next query sees the new data."""
        self._zones = (zones,) if isinstance(zones, Zone) else tuple(zones)

    @property
    def faults(self) -> Mapping[str, Fault]:
        return types.MappingProxyType(dict(self._faults))

    def set_fault(self, apex: str | dns.name.Name, fault: Fault | str) -> None:
        """Switch zone ``apex`` (or ``"*"`` for everything) into a :class:`Fault`."""
        self._faults[fault_key(apex)] = Fault(fault)

    def clear_fault(self, apex: str | dns.name.Name) -> None:
        self._faults.pop(fault_key(apex), None)

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- counters: let tests assert a server was, or was NOT, asked --

    @property
    def queries(self) -> int:
        """Messages received over both transports, garbage included."""
        return self.udp_queries + self.tcp_queries

    def count(self, name: str | dns.name.Name, rdtype: str | int = "A") -> int:
        """How many queries for ``name``/``rdtype`` arrived (name case-insensitive)."""
        return self.counts[_count_key(_absolute(name), dns.rdatatype.RdataType.make(rdtype))]

    def reset_counts(self) -> None:
        self.udp_queries = self.tcp_queries = 0
        self.counts.clear()

    # -- addresses --

    @property
    def address(self) -> str:
        return self._listener.address

    @property
    def port(self) -> int:
        return self._listener.port

    # -- lifecycle --

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        await self._listener.start()
        log.info("dns sim listening on %s port %d (udp+tcp)", self.address, self.port)

    async def close(self) -> None:
        """Stop listening and end open TCP connections; safe to call twice."""
        await self._listener.close()

    # -- request handling --

    def handle(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """One message in, at most one message out; never raises."""
        if tcp:
            self.tcp_queries += 1
        else:
            self.udp_queries += 1
        query = parse_query(wire)
        if query is None:
            silent = self._faults.get(WILDCARD_FAULT) is Fault.TIMEOUT
            return None if silent else formerr_for(wire)
        self._count(query)
        try:
            response = answer(query, self._zones, self._faults, tcp=tcp)
            return None if response is None else render(response, query, tcp=tcp)
        except Exception:  # a bug here must show up in the log, not kill the listener
            log.exception("dns sim: failed to answer %s", query.question)
            return None if query.flags & dns.flags.QR else servfail_for(query)

    async def _serve(self, wire: bytes, *, tcp: bool) -> bytes | None:
        # The listener's handler is async (the recursor awaits upstream); answering is not.
        return self.handle(wire, tcp=tcp)

    def _count(self, query: dns.message.Message) -> None:
        for question in query.question:
            self.counts[_count_key(question.name, question.rdtype)] += 1


def _count_key(name: dns.name.Name, rdtype: int) -> tuple[str, str]:
    return name.canonicalize().to_text(), dns.rdatatype.to_text(rdtype)


async def _close_udp(protocol: _UdpProtocol) -> None:
    if protocol.transport is not None:
        protocol.transport.close()
    await protocol.closed


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
