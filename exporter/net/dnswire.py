"""Address lookups on the wire, lean (pure): the query for a name built once, and the answer
read only for what the resolver needs: rcode, TC, the addresses, a CNAME to chase.

dnspython parses a whole message into objects. For the A/AAAA lookup in front of every TCP,
TLS and HTTP probe that was the largest part of the exporter's own CPU per probe
(docs/benchmarks.md). DNS checks keep dnspython: they export the rcode, flags and records
as the server sent them.

Where both read an answer, they read the same (tests/unit/test_dnswire.py holds the two side
by side): the same checks on the header, the question and names (compression pointers
included), the same rcode, TC flag, addresses and CNAME target. Ours reads less, so it
refuses less: the data of records of other types and the authority and additional sections
are not parsed, so damage there is not an error. Addresses come in the order the server
sent them (dnspython groups them by owner first; a CNAME chain has one owner anyway).
"""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode

_HEADER = struct.Struct("!HHHHHH")
_RECORD = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_QR, _OPCODE, _TC = 0x8000, 0x7800, 0x0200
_TYPE_CNAME = 5
_CLASS_IN = 1
# qtype -> (address family, rdata length)
_ADDRESS_TYPES = {1: (socket.AF_INET, 4), 28: (socket.AF_INET6, 16)}
# Servers may leave the question out of these (dnspython accepts that too).
_QUESTIONLESS_RCODES = frozenset(
    {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}
)
_MAX_NAME = 255
_MAX_POINTER_HOPS = 16


class MalformedReply(dns.exception.FormError):
    """The bytes are not a DNS message (cut short, a bad pointer, a bad record length)."""


@functools.lru_cache(maxsize=4096)
def query_wire(name: str, rdtype: int) -> bytes:
    """The query for (name, rdtype) exactly as dnspython sends it (RD set, no EDNS), ID 0.
    Cached: the checks ask for the same few hundred names all day."""
    wire = dns.message.make_query(name, rdtype).to_wire()
    return b"\0\0" + wire[2:]


def with_id(wire: bytes, query_id: int) -> bytes:
    return query_id.to_bytes(2, "big") + wire[2:]


@dataclass(frozen=True, slots=True)
class AddressReply:
    """What an answer to an A or AAAA query says, as far as the resolver cares."""

    rcode: int
    truncated: bool
    addresses: tuple[str, ...]  # records of the asked type (class IN), whatever their owner
    wire: bytes
    cname_at: int | None = None  # where the first CNAME's target starts in wire

    @property
    def cname(self) -> str | None:
        """The first CNAME's target, written as dnspython writes it ("a.example.com.")."""
        if self.cname_at is None:
            return None
        labels, _ = _read_name(self.wire, self.cname_at)
        return dns.name.Name([*labels, b""]).to_text()


def read_reply(wire: bytes, query: bytes) -> AddressReply:
    """Read `wire` as the answer to `query` (one question, as query_wire builds it).

    Raises dns.query.BadResponse when it answers another query (ID, QR, opcode, question),
    MalformedReply when it is not a well-formed message up to its answer section. Bytes after
    that are not read: authority and additional records say nothing about addresses.
    """
    if len(wire) < _HEADER.size:
        raise MalformedReply("answer shorter than a DNS header")
    reply_id, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(wire)
    query_flags = int.from_bytes(query[2:4], "big")
    if (
        reply_id != int.from_bytes(query[:2], "big")
        or not flags & _QR
        or flags & _OPCODE != query_flags & _OPCODE
    ):
        raise dns.query.BadResponse
    rcode = flags & 0xF  # no extended rcode: the query has no EDNS, so the answer has none
    truncated = bool(flags & _TC)
    question = query[_HEADER.size :]
    if qdcount == 0 and rcode in _QUESTIONLESS_RCODES:
        return AddressReply(rcode, truncated, (), wire)
    end_of_question = _HEADER.size + len(question)
    if qdcount != 1:
        raise dns.query.BadResponse
    if len(wire) < end_of_question:
        raise MalformedReply("answer cut short in its question")
    # Names compare without regard to case: a server may echo 0x20-mixed case.
    if wire[_HEADER.size : end_of_question].lower() != question.lower():
        raise dns.query.BadResponse
    qtype = int.from_bytes(question[-4:-2], "big")
    family, size = _ADDRESS_TYPES[qtype]
    addresses: list[str] = []
    cname_at: int | None = None
    offset = end_of_question
    for _ in range(ancount):
        offset = _skip_name(wire, offset)
        if offset + _RECORD.size > len(wire):
            raise MalformedReply("answer record cut short")
        rtype, rclass, _, rdlength = _RECORD.unpack_from(wire, offset)
        offset += _RECORD.size
        end = offset + rdlength
        if end > len(wire):
            raise MalformedReply("answer record's data cut short")
        if rtype == qtype and rclass == _CLASS_IN:
            if rdlength != size:
                raise MalformedReply(f"address record of {rdlength} bytes")
            addresses.append(socket.inet_ntop(family, wire[offset:end]))
        elif rtype == _TYPE_CNAME:
            if _skip_name(wire, offset) != end:
                raise MalformedReply("CNAME data is not one name")
            if cname_at is None:
                cname_at = offset
        offset = end
    # dnspython's rrsets hold an address once, however often the server repeats it.
    return AddressReply(rcode, truncated, tuple(dict.fromkeys(addresses)), wire, cname_at)


def _skip_name(wire: bytes, offset: int) -> int:
    """Where the name at offset ends in the message (its pointers followed and checked)."""
    _, end = _read_name(wire, offset, decode=False)
    return end


def _read_name(wire: bytes, offset: int, *, decode: bool = True) -> tuple[list[bytes], int]:
    """(labels, offset after the name) of the name at offset, following compression pointers.

    dnspython's rules: a pointer goes back before the part of the name already read (so no
    loop can be built), what it points to may not run into that part, at most 16 hops, at
    most 255 bytes in all.
    """
    labels: list[bytes] = []
    length = 0
    end: int | None = None
    position = offset
    limit = len(wire)  # reading may not reach here: the segment read before the last jump
    floor = offset  # a pointer must point below here
    hops = 0
    while True:
        if position >= limit:
            raise MalformedReply("name runs past the end of its space")
        count = wire[position]
        if count >= 0xC0:
            if position + 1 >= limit:
                raise MalformedReply("compression pointer cut short")
            target = ((count & 0x3F) << 8) | wire[position + 1]
            if target >= floor:
                raise MalformedReply("compression pointer does not point backwards")
            hops += 1
            if hops > _MAX_POINTER_HOPS:
                raise MalformedReply("compression pointer chain too long")
            if end is None:
                end = position + 2
            limit, floor, position = floor, target, target
            continue
        if count >= 0x40:
            raise MalformedReply(f"unknown label type {count:#x}")
        length += count + 1
        if length > _MAX_NAME:
            raise MalformedReply("name longer than 255 bytes")
        if count == 0:
            return labels, (end if end is not None else position + 1)
        if position + 1 + count > limit:
            raise MalformedReply("label runs past the end of its space")
        if decode:
            labels.append(wire[position + 1 : position + 1 + count])
        position += 1 + count
