"""Tests of the simulated DNS server: the pure core, then the real server on loopback."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from exporter.sim import dnsserver
from exporter.sim.dnsserver import DnsServer, Fault, Zone, answer, render

SOA = "a.ns.facebook.com. dns.facebook.com. 1 14400 1800 604800 300"
FB = Zone.from_records(
    "facebook.com",
    {
        "@": [
            ("SOA", 3600, SOA),
            ("NS", 172800, "a.ns.facebook.com."),
            ("NS", 172800, "b.ns"),
            ("A", 300, "127.0.0.10"),
        ],
        "www": [("CNAME", 3600, "star-mini.c10r.facebook.com.")],
        "star-mini.c10r": [("A", 60, "127.0.0.1"), ("AAAA", 60, "::1")],
        "m.facebook.com.": [("CNAME", 300, "www")],  # absolute owner, relative target
        "loop1": [("CNAME", 60, "loop2")],
        "loop2": [("CNAME", 60, "loop1")],
        "dangling": [("CNAME", 60, "gone")],
        "away": [("CNAME", 60, "www.example.org.")],
        "ig": [("CNAME", 60, "z-p42.c10r.instagram.com.")],
    },
)
IG = Zone.from_records(
    "instagram.com",
    {
        "@": [("SOA", 3600, "a.ns.instagram.com. dns.instagram.com. 1 2 3 4 60")],
        "z-p42.c10r": [("A", 60, "127.0.0.2")],
    },
)
NO_SOA = Zone.from_records("whatsapp.net", {"g": [("A", 60, "127.0.0.3")]})
ZONES = (FB, IG, NO_SOA)

SHORT = 0.3  # client timeout for "the server must stay silent" tests
LONG = 5.0  # client timeout where an answer is expected


def query(name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kwargs)


def ask(name: str, rdtype: str = "A", faults: Any = None, **kw: Any) -> dns.message.Message:
    response = answer(query(name, rdtype), ZONES, faults or {}, **kw)
    assert response is not None
    return response


def texts(response: dns.message.Message) -> list[str]:
    return [rrset.to_text() for rrset in response.answer]


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in response.answer for rd in rrset if rrset.rdtype == 1]


# --- Zone model ----------------------------------------------------------------------------


def test_from_records_resolves_relative_and_absolute_names() -> None:
    same = Zone.from_records(
        "facebook.com.",
        {"www.facebook.com.": [("CNAME", 3600, "star-mini.c10r")], "@": [("SOA", 3600, SOA)]},
    )
    www = dns.name.from_text("www.facebook.com")
    assert same.records[(www, dns.rdatatype.CNAME)] == FB.records[(www, dns.rdatatype.CNAME)]
    assert same.get(same.origin, dns.rdatatype.SOA) == FB.get(FB.origin, dns.rdatatype.SOA)
    ns = FB.get(FB.origin, dns.rdatatype.NS)
    assert ns is not None
    assert ns.ttl == 172800
    assert ns.rdatas == ("a.ns.facebook.com.", "b.ns.facebook.com.")


def test_from_records_equal_zones_compare_equal() -> None:
    a = Zone.from_records("x.test", {"@": [("A", 1, "127.0.0.1")]})
    b = Zone.from_records("X.test.", {"x.test.": [(1, 1, "127.0.0.1")]})
    assert a == b


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"www.example.org.": [("A", 60, "127.0.0.1")]}, "outside zone"),
        ({"a": [("A", 60, "127.0.0.1"), ("A", 30, "127.0.0.2")]}, "two TTLs"),
        ({"a": [("CNAME", 60, "b"), ("A", 60, "127.0.0.1")]}, "CNAME and other data"),
        ({"a": [("CNAME", 60, "b"), ("CNAME", 60, "c")]}, "more than one CNAME"),
        ({"a": [("A", -1, "127.0.0.1")]}, "TTL out of range"),
        ({"a": [("ANY", 60, "127.0.0.1")]}, "cannot be stored"),
    ],
)
def test_from_records_rejects_bad_data(records: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Zone.from_records("facebook.com", records)


def test_from_records_rejects_bad_rdata() -> None:
    with pytest.raises(dns.exception.SyntaxError):
        Zone.from_records("facebook.com", {"a": [("A", 60, "not-an-address")]})


def test_zones_are_hashable_values() -> None:
    twin = Zone.from_records("whatsapp.net.", {"g.whatsapp.net.": [("A", 60, "127.0.0.3")]})
    assert len({NO_SOA, twin, FB}) == 2


def test_zone_records_are_read_only() -> None:
    with pytest.raises(TypeError):
        FB.records[(FB.origin, dns.rdatatype.MX)] = dnsserver.RecordSet(1, ())  # type: ignore[index]


# --- the pure answer() ---------------------------------------------------------------------


def test_answer_is_authoritative_and_copies_header() -> None:
    q = query("star-mini.c10r.facebook.com")
    response = answer(q, ZONES, {})
    assert response is not None
    assert response.id == q.id
    assert response.question == q.question
    assert response.flags & dns.flags.QR
    assert response.flags & dns.flags.AA
    assert response.flags & dns.flags.RD
    assert not response.flags & dns.flags.RA
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == ["127.0.0.1"]


def test_answer_without_rd_keeps_rd_clear() -> None:
    response = answer(query("facebook.com", flags=0), ZONES, {})
    assert response is not None
    assert not response.flags & dns.flags.RD


def test_answer_preserves_query_name_case() -> None:
    response = ask("STAR-mini.C10R.facebook.com")
    assert response.answer[0].name.to_text() == "STAR-mini.C10R.facebook.com."


def test_cname_chain_is_followed_in_the_answer_section() -> None:
    response = ask("m.facebook.com")
    assert texts(response) == [
        "m.facebook.com. 300 IN CNAME www.facebook.com.",
        "www.facebook.com. 3600 IN CNAME star-mini.c10r.facebook.com.",
        "star-mini.c10r.facebook.com. 60 IN A 127.0.0.1",
    ]
    assert response.rcode() == dns.rcode.NOERROR


def test_cname_chain_crosses_into_another_served_zone() -> None:
    response = ask("ig.facebook.com")
    assert texts(response)[-1] == "z-p42.c10r.instagram.com. 60 IN A 127.0.0.2"


def test_cname_to_a_missing_name_is_nxdomain_with_the_cname() -> None:
    response = ask("dangling.facebook.com")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert texts(response) == ["dangling.facebook.com. 60 IN CNAME gone.facebook.com."]
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_cname_out_of_our_zones_stops_with_noerror() -> None:
    response = ask("away.facebook.com")
    assert response.rcode() == dns.rcode.NOERROR
    assert texts(response) == ["away.facebook.com. 60 IN CNAME www.example.org."]
    assert response.authority == []


def test_cname_loop_terminates() -> None:
    response = ask("loop1.facebook.com")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rrset.name.to_text() for rrset in response.answer] == [
        "loop1.facebook.com.",
        "loop2.facebook.com.",
    ]


def test_cname_query_returns_the_cname_without_chasing() -> None:
    response = ask("www.facebook.com", "CNAME")
    assert texts(response) == ["www.facebook.com. 3600 IN CNAME star-mini.c10r.facebook.com."]


def test_nodata_has_soa_with_negative_ttl() -> None:
    response = ask("star-mini.c10r.facebook.com", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert response.answer == []
    (soa,) = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == 300  # min(SOA TTL 3600, MINIMUM 300), RFC 2308


def test_empty_non_terminal_is_nodata_not_nxdomain() -> None:
    response = ask("c10r.facebook.com")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_nodata_without_soa_has_empty_authority() -> None:
    response = ask("g.whatsapp.net", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.authority == []


def test_nxdomain_inside_zone() -> None:
    response = ask("nope.facebook.com")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.authority[0].name == FB.origin


def test_refused_outside_all_zones() -> None:
    response = ask("www.example.org")
    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA


def test_most_specific_zone_wins() -> None:
    child = Zone.from_records("c10r.facebook.com", {"star-mini": [("A", 5, "127.0.0.9")]})
    response = answer(query("star-mini.c10r.facebook.com"), [FB, child], {})
    assert response is not None
    assert addresses(response) == ["127.0.0.9"]


def test_any_returns_all_rrsets_at_the_name() -> None:
    response = ask("star-mini.c10r.facebook.com", "ANY")
    assert sorted(rrset.rdtype for rrset in response.answer) == [
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
    ]


def test_no_question_is_formerr() -> None:
    q = query("facebook.com")
    q.question = []
    response = answer(q, ZONES, {})
    assert response is not None
    assert response.rcode() == dns.rcode.FORMERR


def test_two_questions_are_formerr() -> None:
    q = query("facebook.com")
    q.question = [*q.question, *query("www.facebook.com").question]
    response = answer(q, ZONES, {})
    assert response is not None
    assert response.rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize(
    ("rdtype", "rcode"),
    [("AXFR", dns.rcode.REFUSED), ("IXFR", dns.rcode.REFUSED), ("OPT", dns.rcode.FORMERR)],
)
def test_meta_types(rdtype: str, rcode: dns.rcode.Rcode) -> None:
    assert ask("facebook.com", rdtype).rcode() == rcode


def test_other_opcode_is_notimp() -> None:
    q = query("facebook.com")
    q.set_opcode(dns.opcode.NOTIFY)
    response = answer(q, ZONES, {})
    assert response is not None
    assert response.rcode() == dns.rcode.NOTIMP


def test_unknown_edns_version_is_badvers() -> None:
    response = answer(query("facebook.com", use_edns=1), ZONES, {})
    assert response is not None
    assert response.rcode() == dns.rcode.BADVERS


def test_chaos_class_is_refused() -> None:
    q = dns.message.make_query("version.bind", "TXT", rdclass=dns.rdataclass.CH)
    response = answer(q, ZONES, {})
    assert response is not None
    assert response.rcode() == dns.rcode.REFUSED


def test_a_response_is_never_answered() -> None:
    response = ask("facebook.com")
    assert answer(response, ZONES, {}) is None


# --- faults, pure -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "rcode"),
    [("servfail", dns.rcode.SERVFAIL), ("refused", dns.rcode.REFUSED)],
)
def test_rcode_faults(fault: str, rcode: dns.rcode.Rcode) -> None:
    response = ask("www.facebook.com", faults={"facebook.com": fault})
    assert response.rcode() == rcode
    assert response.answer == []
    assert not response.flags & dns.flags.AA


def test_nxdomain_fault_hides_existing_names() -> None:
    response = ask("www.facebook.com", faults={"facebook.com.": Fault.NXDOMAIN})
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_timeout_fault_drops() -> None:
    assert answer(query("facebook.com"), ZONES, {"facebook.com": "timeout"}) is None


def test_truncate_fault_only_affects_udp() -> None:
    udp = ask("www.facebook.com", faults={"facebook.com": "truncate"})
    assert udp.flags & dns.flags.TC
    assert udp.answer == [] and udp.authority == []
    tcp = ask("www.facebook.com", faults={"facebook.com": "truncate"}, tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert addresses(tcp) == ["127.0.0.1"]


def test_huge_fault_answers_1000_loopback_a_records() -> None:
    response = ask("www.facebook.com", faults={"facebook.com": "huge"})
    (rrset,) = response.answer
    assert len(rrset) == 1000
    assert all(rd.to_text().startswith("127.") for rd in rrset)


def test_fault_is_per_zone() -> None:
    faults = {"instagram.com": "servfail"}
    assert ask("z-p42.c10r.instagram.com", faults=faults).rcode() == dns.rcode.SERVFAIL
    assert ask("www.facebook.com", faults=faults).rcode() == dns.rcode.NOERROR


def test_wildcard_fault_covers_all_and_zone_fault_wins() -> None:
    faults = {"*": "refused", "facebook.com": "servfail"}
    assert ask("z-p42.c10r.instagram.com", faults=faults).rcode() == dns.rcode.REFUSED
    assert ask("www.example.org", faults=faults).rcode() == dns.rcode.REFUSED
    assert ask("www.facebook.com", faults=faults).rcode() == dns.rcode.SERVFAIL
    assert answer(query("www.example.org"), ZONES, {"*": "timeout"}) is None


def test_unknown_fault_is_rejected() -> None:
    with pytest.raises(ValueError):
        answer(query("facebook.com"), ZONES, {"facebook.com": "on-fire"})


def test_render_truncates_what_does_not_fit_udp() -> None:
    q = query("www.facebook.com")
    response = answer(q, ZONES, {"*": "huge"})
    assert response is not None
    small = dns.message.from_wire(render(response, q, tcp=False))
    assert small.flags & dns.flags.TC
    assert small.answer == []
    big = answer(q, ZONES, {"*": "huge"}, tcp=True)
    assert big is not None
    assert len(dns.message.from_wire(render(big, q, tcp=True)).answer[0]) == 1000


def test_udp_limit_follows_edns_payload() -> None:
    assert dnsserver.udp_limit(query("a.test")) == 512
    assert dnsserver.udp_limit(query("a.test", use_edns=0, payload=4096)) == 1232
    assert dnsserver.udp_limit(query("a.test", use_edns=0, payload=100)) == 512


def test_formerr_for_garbage() -> None:
    header = bytes.fromhex("abcd 0100 0001 0000 0000 0000")  # says 1 question, has none
    assert dnsserver.parse_query(header) is None
    wire = dnsserver.formerr_for(header)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == 0xABCD
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.flags & dns.flags.RD
    assert dnsserver.formerr_for(b"\x00\x01") is None  # not even a header


# --- the real server on loopback ----------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with DnsServer(ZONES) as srv:
        yield srv


async def udp(srv: DnsServer, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    timeout = kw.pop("timeout", LONG)
    q = query(name, rdtype, **kw)
    return await dns.asyncquery.udp(q, srv.address, timeout=timeout, port=srv.port)


async def tcp(srv: DnsServer, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    timeout = kw.pop("timeout", LONG)
    q = query(name, rdtype, **kw)
    return await dns.asyncquery.tcp(q, srv.address, timeout=timeout, port=srv.port)


async def with_fallback(srv: DnsServer, name: str, **kw: Any) -> tuple[dns.message.Message, bool]:
    q = query(name, "A", **kw)
    return await dns.asyncquery.udp_with_fallback(q, srv.address, timeout=LONG, port=srv.port)


async def test_udp_a_answer_is_authoritative(server: DnsServer) -> None:
    response = await udp(server, "star-mini.c10r.facebook.com")
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert addresses(response) == ["127.0.0.1"]
    assert server.address == "127.0.0.1"
    assert server.port > 0


async def test_tcp_answers_on_the_same_port(server: DnsServer) -> None:
    response = await tcp(server, "star-mini.c10r.facebook.com", "AAAA")
    assert response.flags & dns.flags.AA
    assert [rd.to_text() for rd in response.answer[0]] == ["::1"]
    assert server.tcp_queries == 1


async def test_udp_cname_chain(server: DnsServer) -> None:
    response = await udp(server, "www.facebook.com")
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(response) == ["127.0.0.1"]


async def test_udp_nodata(server: DnsServer) -> None:
    response = await udp(server, "star-mini.c10r.facebook.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


async def test_udp_nxdomain(server: DnsServer) -> None:
    response = await udp(server, "nope.facebook.com")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA


async def test_udp_refused_out_of_zone(server: DnsServer) -> None:
    response = await udp(server, "www.example.org")
    assert response.rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize(
    ("fault", "rcode"),
    [
        ("servfail", dns.rcode.SERVFAIL),
        ("refused", dns.rcode.REFUSED),
        ("nxdomain", dns.rcode.NXDOMAIN),
    ],
)
async def test_rcode_faults_over_udp_and_tcp(
    server: DnsServer, fault: str, rcode: dns.rcode.Rcode
) -> None:
    server.set_fault("facebook.com", fault)
    assert (await udp(server, "www.facebook.com")).rcode() == rcode
    assert (await tcp(server, "www.facebook.com")).rcode() == rcode
    server.clear_faults()
    assert (await udp(server, "www.facebook.com")).rcode() == dns.rcode.NOERROR


async def test_timeout_fault_makes_udp_and_tcp_clients_time_out(server: DnsServer) -> None:
    server.set_fault("*", Fault.TIMEOUT)
    with pytest.raises(dns.exception.Timeout):
        await udp(server, "www.facebook.com", timeout=SHORT)
    with pytest.raises(dns.exception.Timeout):
        await tcp(server, "www.facebook.com", timeout=SHORT)
    assert server.count("www.facebook.com") == 2  # asked, but silent
    server.clear_fault("*")
    assert (await udp(server, "www.facebook.com")).rcode() == dns.rcode.NOERROR


async def test_truncate_fault_forces_tcp_fallback(server: DnsServer) -> None:
    server.set_fault("facebook.com", "truncate")
    truncated = await udp(server, "www.facebook.com")
    assert truncated.flags & dns.flags.TC
    assert truncated.answer == []
    response, used_tcp = await with_fallback(server, "www.facebook.com")
    assert used_tcp
    assert addresses(response) == ["127.0.0.1"]
    assert (server.udp_queries, server.tcp_queries) == (2, 1)


async def test_huge_fault_comes_whole_over_tcp(server: DnsServer) -> None:
    server.set_fault("facebook.com", "huge")
    response, used_tcp = await with_fallback(server, "www.facebook.com", use_edns=0)
    assert used_tcp
    assert len(response.answer[0]) == 1000
    assert len((await tcp(server, "www.facebook.com")).answer[0]) == 1000


async def test_set_fault_validates_names(server: DnsServer) -> None:
    with pytest.raises(ValueError):
        server.set_fault("facebook.com", "on-fire")
    server.set_fault("Facebook.COM", "SERVFAIL")
    assert dict(server.faults) == {"facebook.com.": Fault.SERVFAIL}


async def test_set_zones_at_run_time(server: DnsServer) -> None:
    assert addresses(await udp(server, "facebook.com")) == ["127.0.0.10"]
    server.set_zones(Zone.from_records("facebook.com", {"@": [("A", 5, "127.0.0.99")]}))
    assert addresses(await udp(server, "facebook.com")) == ["127.0.0.99"]
    assert (await udp(server, "www.instagram.com")).rcode() == dns.rcode.REFUSED
    server.set_zones([])
    assert (await udp(server, "facebook.com")).rcode() == dns.rcode.REFUSED


async def test_query_counters(server: DnsServer) -> None:
    await udp(server, "www.facebook.com")
    await tcp(server, "WWW.Facebook.com")
    await udp(server, "www.facebook.com", "AAAA")
    assert server.queries == 3
    assert server.count("www.facebook.com") == 2
    assert server.count("www.facebook.com.", "AAAA") == 1
    assert server.count("m.facebook.com") == 0
    server.reset_counts()
    assert server.queries == 0
    assert server.count("www.facebook.com") == 0


async def test_a_server_that_was_not_asked_counts_zero() -> None:
    async with DnsServer(ZONES) as asked, DnsServer(ZONES) as spare:
        await udp(asked, "www.facebook.com")
        assert asked.queries == 1
        assert spare.queries == 0


async def test_ipv6_loopback() -> None:
    if not _ipv6_loopback_available():
        pytest.skip("IPv6 loopback ::1 is not available on this host")
    async with DnsServer(ZONES, host="::1") as srv:
        assert srv.address == "::1"
        assert addresses(await udp(srv, "facebook.com")) == ["127.0.0.10"]
        assert addresses(await tcp(srv, "facebook.com")) == ["127.0.0.10"]


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_several_queries_on_one_tcp_connection(server: DnsServer) -> None:
    reader, writer = await asyncio.open_connection(server.address, server.port)
    try:
        names = ["facebook.com", "www.facebook.com", "nope.facebook.com"]
        queries = [query(name) for name in names]
        writer.write(b"".join(q.to_wire(prepend_length=True) for q in queries))  # pipelined
        await writer.drain()
        for q in queries:
            size = int.from_bytes(await reader.readexactly(2), "big")
            reply = dns.message.from_wire(await reader.readexactly(size))
            assert reply.id == q.id
        assert server.tcp_queries == 3
    finally:
        writer.close()
        await writer.wait_closed()


async def test_idle_tcp_connection_is_closed() -> None:
    async with DnsServer(ZONES, tcp_idle_timeout=0.2) as srv:
        reader, writer = await asyncio.open_connection(srv.address, srv.port)
        writer.write(b"\x00")  # half a length prefix, then nothing: a stuck client
        try:
            async with asyncio.timeout(LONG):
                assert await reader.read() == b""  # the server hung up
        finally:
            writer.close()
            await writer.wait_closed()


async def test_close_ends_open_tcp_connections() -> None:
    srv = DnsServer(ZONES)
    await srv.start()
    reader, writer = await asyncio.open_connection(srv.address, srv.port)
    try:
        await asyncio.sleep(0.05)  # let the server accept it
        async with asyncio.timeout(LONG):
            await srv.close()
            assert await reader.read() == b""
        await srv.close()  # idempotent
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_connection_limit() -> None:
    async with DnsServer(ZONES, max_tcp_connections=1) as srv:
        first_reader, first = await asyncio.open_connection(srv.address, srv.port)
        second_reader, second = await asyncio.open_connection(srv.address, srv.port)
        try:
            # Serving a query proves the first connection holds the only slot.
            first.write(query("facebook.com").to_wire(prepend_length=True))
            await first.drain()
            async with asyncio.timeout(LONG):
                size = int.from_bytes(await first_reader.readexactly(2), "big")
                await first_reader.readexactly(size)
                assert await second_reader.read() == b""  # turned away
        finally:
            for writer in (first, second):
                writer.close()
                await writer.wait_closed()


async def test_garbage_gets_formerr_and_the_server_survives(server: DnsServer) -> None:
    header = bytes.fromhex("beef 0100 0001 0000 0000 0000")
    reply = dns.message.from_wire(await _udp_raw(server, header))
    assert (reply.id, reply.rcode()) == (0xBEEF, dns.rcode.FORMERR)
    response = await udp(server, "facebook.com")
    assert response.rcode() == dns.rcode.NOERROR
    assert server.udp_queries == 2


async def _udp_raw(srv: DnsServer, payload: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            if not received.done():
                received.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(srv.address, srv.port))
    try:
        transport.sendto(payload)
        async with asyncio.timeout(LONG):
            return await received
    finally:
        transport.close()


async def test_fixed_port_in_use_raises() -> None:
    async with DnsServer(ZONES) as first:
        second = DnsServer(ZONES, port=first.port)
        with pytest.raises(OSError):
            await second.start()
        await second.close()


async def test_ephemeral_port_retries_when_tcp_port_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_start_server = asyncio.start_server
    calls: list[int] = []

    async def flaky_start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        calls.append(args[2])
        if len(calls) == 1:
            raise OSError(errno.EADDRINUSE, "address in use")
        return await real_start_server(*args, **kwargs)

    monkeypatch.setattr(dnsserver.asyncio, "start_server", flaky_start_server)
    async with DnsServer(ZONES) as srv:
        # Our refusal, then one or more real tries: a port taken by a test running
        # beside this one is retried too.
        assert len(calls) >= 2
        assert calls[-1] == srv.port
        assert (await tcp(srv, "facebook.com")).rcode() == dns.rcode.NOERROR


async def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = DnsServer(ZONES).port


def test_host_must_be_an_ip_literal() -> None:
    with pytest.raises(ValueError):
        DnsServer(ZONES, host="localhost")
