"""The lean address reader (exporter/net/dnswire.py) beside dnspython, which it replaces on
the resolver's path: same answers from the same bytes, and no wider acceptance."""

from __future__ import annotations

import ipaddress
import random

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.net import dnswire

QNAME = "www.facebook.com"


def query(name: str = QNAME, rdtype: str = "A", query_id: int = 4242) -> bytes:
    return dnswire.with_id(dnswire.query_wire(name, dns.rdatatype.from_text(rdtype)), query_id)


def reply_to(wire: bytes) -> dns.message.Message:
    return dns.message.make_response(dns.message.from_wire(wire))


def expected(wire: bytes, sent: bytes) -> tuple[int, bool, list[str], str | None]:
    """What dnspython reads from the same bytes: rcode, TC, addresses, first CNAME target."""
    request = dns.message.from_wire(sent)
    response = dns.message.from_wire(wire, ignore_trailing=True)
    assert request.is_response(response)
    qtype = request.question[0].rdtype
    addresses = sorted(
        {
            rd.to_text()
            for rrset in response.answer
            if rrset.rdtype == qtype and rrset.rdclass == dns.rdataclass.IN
            for rd in rrset
        }
    )
    cnames = [r for r in response.answer if r.rdtype == dns.rdatatype.CNAME]
    target = cnames[0][0].target.to_text() if cnames else None
    return response.rcode(), bool(response.flags & dns.flags.TC), addresses, target


def read(wire: bytes, sent: bytes) -> tuple[int, bool, list[str], str | None]:
    reply = dnswire.read_reply(wire, sent)
    return reply.rcode, reply.truncated, sorted(reply.addresses), reply.cname


def refused_by_both(wire: bytes, sent: bytes) -> None:
    with pytest.raises(dns.exception.DNSException):
        dns.message.from_wire(wire, ignore_trailing=True)
    with pytest.raises(dnswire.MalformedReply):
        dnswire.read_reply(wire, sent)


def test_the_query_is_dnspythons_with_its_id() -> None:
    made = dns.message.make_query(QNAME, "AAAA")
    sent = dnswire.with_id(dnswire.query_wire(QNAME, 28), made.id)
    assert sent == made.to_wire()


def test_a_chain_ending_in_addresses() -> None:
    sent = query()
    response = reply_to(sent)
    response.answer = [
        dns.rrset.from_text(QNAME + ".", 300, "IN", "CNAME", "star-mini.c10r.facebook.com."),
        dns.rrset.from_text("star-mini.c10r.facebook.com.", 60, "IN", "A", "157.240.1.35"),
    ]
    reply = dnswire.read_reply(response.to_wire(), sent)
    assert reply.addresses == ("157.240.1.35",)
    assert reply.cname == "star-mini.c10r.facebook.com."
    assert read(response.to_wire(), sent) == expected(response.to_wire(), sent)


def test_ipv6_addresses_are_written_as_dnspython_writes_them() -> None:
    sent = query(rdtype="AAAA")
    response = reply_to(sent)
    texts = ["2a03:2880:f12f:83:face:b00c:0:25de", "::1", "::ffff:10.0.0.1", "2001:db8::"]
    response.answer = [dns.rrset.from_text_list(QNAME + ".", 60, "IN", "AAAA", texts)]
    assert read(response.to_wire(), sent) == expected(response.to_wire(), sent)


def _with_record(reply: bytes, rdclass: int, address: bytes) -> bytes:
    """The reply with one more A record for the question's name, of the given class."""
    wire = bytearray(reply)
    wire[7] += 1
    wire += bytes([0xC0, 12]) + bytes([0, 1, 0, rdclass]) + bytes.fromhex("0000003c 0004")
    return bytes(wire + address)


def test_the_same_address_twice_is_one_address() -> None:
    sent = query()
    once = _with_record(reply_to(sent).to_wire(), 1, b"\n\0\0\1")
    wire = _with_record(once, 1, b"\n\0\0\1")
    assert dnswire.read_reply(wire, sent).addresses == ("10.0.0.1",)
    assert read(wire, sent) == expected(wire, sent)


def test_only_internet_class_records_are_addresses() -> None:
    """Class 4 (Hesiod): dnspython reads the record, but it is no Internet address."""
    sent = query()
    wire = _with_record(reply_to(sent).to_wire(), 4, b"\n\0\0\1")
    assert dns.message.from_wire(wire).answer[0].rdclass == 4
    assert dnswire.read_reply(wire, sent).addresses == ()


def test_a_cname_alone_is_given_to_chase() -> None:
    sent = query()
    response = reply_to(sent)
    response.answer = [dns.rrset.from_text(QNAME + ".", 300, "IN", "CNAME", "other.example.")]
    reply = dnswire.read_reply(response.to_wire(), sent)
    assert (reply.addresses, reply.cname) == ((), "other.example.")


@pytest.mark.parametrize(
    "rcode", [dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED]
)
def test_rcodes(rcode: dns.rcode.Rcode) -> None:
    sent = query()
    response = reply_to(sent)
    response.set_rcode(rcode)
    assert dnswire.read_reply(response.to_wire(), sent).rcode == rcode


def test_truncated_answers_say_so() -> None:
    sent = query()
    response = reply_to(sent)
    response.flags |= dns.flags.TC
    assert dnswire.read_reply(response.to_wire(), sent).truncated


def test_the_question_may_come_back_in_mixed_case() -> None:
    """0x20 encoding: servers (and resolvers that use it) echo the case they were sent."""
    sent = query()
    response = reply_to(sent)
    response.question = [dns.rrset.RRset(dns.name.from_text("wWw.FaceBook.CoM."), 1, 1)]
    response.answer = [dns.rrset.from_text(QNAME + ".", 60, "IN", "A", "10.0.0.1")]
    assert dnswire.read_reply(response.to_wire(), sent).addresses == ("10.0.0.1",)


def test_a_failure_without_its_question_is_still_an_answer() -> None:
    sent = query()
    response = reply_to(sent)
    response.question = []
    response.set_rcode(dns.rcode.SERVFAIL)
    assert dnswire.read_reply(response.to_wire(), sent).rcode == dns.rcode.SERVFAIL


def _other_id(sent: bytes) -> bytes:
    response = reply_to(sent)
    response.id ^= 1
    return response.to_wire()


def _not_a_response(sent: bytes) -> bytes:
    response = reply_to(sent)
    response.flags &= ~dns.flags.QR
    return response.to_wire()


def _other_question(sent: bytes) -> bytes:
    return reply_to(query(name="www.instagram.com")).to_wire()


def _other_type(sent: bytes) -> bytes:
    return reply_to(query(rdtype="AAAA")).to_wire()


def _noerror_without_question(sent: bytes) -> bytes:
    response = reply_to(sent)
    response.question = []
    return response.to_wire()


@pytest.mark.parametrize(
    "make", [_other_id, _not_a_response, _other_question, _other_type, _noerror_without_question]
)
def test_an_answer_to_another_query_is_refused(make) -> None:  # type: ignore[no-untyped-def]
    sent = query()
    wire = make(sent)
    assert not dns.message.from_wire(sent).is_response(dns.message.from_wire(wire))
    with pytest.raises(dns.query.BadResponse):
        dnswire.read_reply(wire, sent)


def _pointer_loop() -> bytes:
    sent = query()
    wire = bytearray(reply_to(sent).to_wire())
    wire[7] = 1  # one answer record, whose owner points at itself
    owner = len(wire)
    wire += bytes([0xC0 | owner >> 8, owner & 0xFF]) + bytes.fromhex("0001 0001 0000003c 0004")
    wire += bytes([10, 0, 0, 1])
    return bytes(wire)


def _forward_pointer() -> bytes:
    sent = query()
    wire = bytearray(reply_to(sent).to_wire())
    wire[7] = 1
    owner = len(wire)
    wire += bytes([0xC0, owner + 2]) + bytes.fromhex("0001 0001 0000003c 0004 0a000001")
    return bytes(wire)


def _short_address() -> bytes:
    sent = query()
    wire = bytearray(reply_to(sent).to_wire())
    wire[7] = 1
    wire += bytes([0xC0, 12]) + bytes.fromhex("0001 0001 0000003c 0003 0a0000")
    return bytes(wire)


@pytest.mark.parametrize("wire", [_pointer_loop(), _forward_pointer(), _short_address(), b"\x10"])
def test_malformed_answers_are_refused_as_dnspython_refuses_them(wire: bytes) -> None:
    sent = query()
    refused_by_both(wire, sent)


def _raw_reply(sent: bytes, *records: bytes) -> bytes:
    """A reply to sent whose answer section is these records, written by hand."""
    wire = bytearray(reply_to(sent).to_wire())
    wire[6:8] = len(records).to_bytes(2, "big")
    return bytes(wire) + b"".join(records)


def _rr(owner: bytes, rdtype: int, rdata: bytes) -> bytes:
    return (
        owner
        + rdtype.to_bytes(2, "big")
        + b"\0\1\0\0\0\x3c"
        + len(rdata).to_bytes(2, "big")
        + rdata
    )


def _chained_names(start: int, segments: int, label: bytes) -> tuple[bytes, int]:
    """Name segments written from offset start, each a label and a pointer to the one
    before (the first ends the name): (their bytes, offset of the last)."""
    data, last = bytearray(), -1
    for index in range(segments):
        at = start + len(data)
        tail = b"\0" if index == 0 else bytes([0xC0 | last >> 8, last & 0xFF])
        data += bytes([len(label)]) + label + tail
        last = at
    return bytes(data), last


def _via_chain(segments: int, label: bytes) -> bytes:
    """An A record whose owner is reached through `segments` chained names, carried in the
    data of a record of a private type (which both readers skip unparsed)."""
    sent = query()
    head = reply_to(sent).to_wire()
    start = len(head) + len(_rr(b"\xc0\x0c", 65280, b""))
    names, last = _chained_names(start, segments, label)
    owner = bytes([0xC0 | last >> 8, last & 0xFF])
    return _raw_reply(sent, _rr(b"\xc0\x0c", 65280, names), _rr(owner, 1, b"\n\0\0\1"))


@pytest.mark.parametrize(
    ("segments", "label", "readable"),
    [
        (16, b"a", True),  # the owner's pointer and 15 more: 16, the most dnspython follows
        (17, b"a", False),
        (3, b"x" * 63, True),  # 3 x 64 bytes and the root: 193
        (4, b"x" * 63, False),  # 257: longer than a name may be
    ],
)
def test_pointer_chains_and_name_lengths_as_dnspython(
    segments: int, label: bytes, readable: bool
) -> None:
    sent = query()
    wire = _via_chain(segments, label)
    if readable:
        assert read(wire, sent) == expected(wire, sent)
        assert dnswire.read_reply(wire, sent).addresses == ("10.0.0.1",)
        return
    refused_by_both(wire, sent)


def test_a_pointer_back_into_its_own_name_is_refused() -> None:
    sent = query()
    at = len(reply_to(sent).to_wire())
    owner = b"\x01a\x01b" + bytes([0xC0 | (at + 2) >> 8, (at + 2) & 0xFF])  # to "b", again
    wire = _raw_reply(sent, _rr(owner, 1, b"\n\0\0\1"))
    refused_by_both(wire, sent)


def test_addresses_keep_the_servers_order() -> None:
    """Not dnspython's (it groups by owner): the order the server chose to rotate them in."""
    sent = query()
    wire = _raw_reply(
        sent,
        _rr(b"\xc0\x0c", 1, bytes([10, 0, 0, 1])),
        _rr(b"\x01x\x07example\x00", 1, bytes([10, 0, 0, 2])),
        _rr(b"\xc0\x0c", 1, bytes([10, 0, 0, 3])),
    )
    assert dnswire.read_reply(wire, sent).addresses == ("10.0.0.1", "10.0.0.2", "10.0.0.3")


# Owners under the question's name, so dnspython compresses them against it and each other.
_owners = st.sampled_from(
    [QNAME, "star-mini.c10r.facebook.com", "a.b.facebook.com", "FaceBook.com", "x.example"]
)
_ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_record = st.one_of(
    st.tuples(_owners, st.just("A"), _ipv4),
    st.tuples(_owners, st.just("AAAA"), _ipv6),
    st.tuples(_owners, st.just("CNAME"), _owners.map(lambda n: n + ".")),
    st.tuples(_owners, st.just("TXT"), st.text("abc xyz", max_size=20).map(lambda t: f'"{t}"')),
)


def _response(sent: bytes, records: list[tuple[str, str, str]], rcode: int, tc: bool) -> bytes:
    response = reply_to(sent)
    response.set_rcode(rcode)
    if tc:
        response.flags |= dns.flags.TC
    for owner, rdtype, text in records:
        rrset = response.find_rrset(
            response.answer,
            dns.name.from_text(owner),
            dns.rdataclass.IN,
            dns.rdatatype.from_text(rdtype),
            create=True,
        )
        rrset.add(dns.rdata.from_text("IN", rdtype, text), 60)
    return response.to_wire()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(_record, max_size=12),
    rdtype=st.sampled_from(["A", "AAAA"]),
    rcode=st.sampled_from([0, 2, 3, 5]),
    tc=st.booleans(),
)
def test_same_reading_as_dnspython(
    records: list[tuple[str, str, str]], rdtype: str, rcode: int, tc: bool
) -> None:
    sent = query(rdtype=rdtype)
    wire = _response(sent, records, rcode, tc)
    assert read(wire, sent) == expected(wire, sent)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_record, min_size=1, max_size=6), seed=st.integers(0, 2**32))
def test_damaged_answers_never_read_otherwise_than_dnspython(
    records: list[tuple[str, str, str]], seed: int
) -> None:
    """Bytes cut off or overwritten: ours raises a DNSException (never anything else), and
    an answer dnspython reads, ours reads the same. (Ours may refuse less: it does not parse
    what it does not need, see exporter/net/dnswire.py.)"""
    sent = query()
    wire = bytearray(_response(sent, records, 0, False))
    rng = random.Random(seed)
    if rng.random() < 0.3:
        del wire[rng.randrange(1, len(wire)) :]
    for _ in range(rng.randint(1, 3)):
        wire[rng.randrange(len(wire))] = rng.randrange(256)
    damaged = bytes(wire)
    try:
        theirs = expected(damaged, sent)
    except (dns.exception.DNSException, AssertionError, ValueError):
        theirs = None
    try:
        ours = read(damaged, sent)
    except dns.exception.DNSException:
        ours = None
    if theirs is not None:
        assert ours == theirs
