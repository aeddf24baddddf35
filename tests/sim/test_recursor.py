"""Tests of the lab's caching recursive resolver: the pure parts, then against real
authoritative DnsServers on loopback, then the UDP/TCP server end to end.

Every address is loopback. Cache time is a fake clock the tests advance; nothing sleeps
for a TTL.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from exporter.sim.dnsserver import DnsServer, Zone, answer
from exporter.sim.recursor import (
    MAX_CNAME_HOPS,
    NEGATIVE_TTL_FALLBACK,
    Cache,
    Recursor,
    RecursorServer,
    Resolution,
    Server,
    Step,
    build_response,
    digest,
    dnspython_upstream,
    early_rcode,
    find_stub,
    parse_stubs,
)

Rcode = dns.rcode.Rcode
LOOP = "127.0.0.1"

# SOA TTL 3600 but MINIMUM 30: negative answers live 30 s (RFC 2308 section 5).
FB_SOA = "a.ns.facebook.com. dns.facebook.com. 1 14400 1800 604800 30"
CHAIN = {f"c{i}": [("CNAME", 600, f"c{i + 1}")] for i in range(MAX_CNAME_HOPS + 1)}
FB = Zone.from_records(
    "facebook.com",
    {
        "@": [("SOA", 3600, FB_SOA), ("NS", 172800, "a.ns"), ("A", 300, "127.0.0.10")],
        "www": [("CNAME", 3600, "star-mini.c10r")],
        "star-mini.c10r": [("A", 60, "127.0.0.1"), ("AAAA", 60, "::1")],
        "z-p42-instagram.c10r": [("A", 120, "127.0.0.2")],
        "loop1": [("CNAME", 60, "loop2")],
        "loop2": [("CNAME", 60, "loop1")],
        "dangling": [("CNAME", 600, "gone")],
        "away": [("CNAME", 60, "www.example.org.")],
        "ig": [("CNAME", 60, "www.instagram.com.")],
        **CHAIN,
        f"c{MAX_CNAME_HOPS + 1}": [("A", 60, "127.0.0.3")],
    },
)
IG = Zone.from_records(
    "instagram.com",
    {
        "@": [("SOA", 3600, "a.ns.instagram.com. dns.instagram.com. 1 2 3 4 60")],
        "www": [("CNAME", 300, "z-p42-instagram.c10r.facebook.com.")],
    },
)
NO_SOA = Zone.from_records("whatsapp.net", {"g": [("A", 60, "127.0.0.4")]})


class FakeClock:
    """The cache's clock; tests move it instead of sleeping for TTLs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def texts(rrsets: Any) -> list[str]:
    return [rrset.to_text() for rrset in rrsets]


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- fixtures: authoritative servers on loopback, a recursor pointed at them --------------


@pytest.fixture
async def fb_server() -> AsyncIterator[DnsServer]:
    async with DnsServer((FB, NO_SOA), host=LOOP) as server:
        yield server


@pytest.fixture
async def ig_server() -> AsyncIterator[DnsServer]:
    async with DnsServer(IG, host=LOOP) as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stubs(fb_server: DnsServer, ig_server: DnsServer) -> dict[str, list[Server]]:
    return {
        "facebook.com": [(LOOP, fb_server.port)],
        "instagram.com": [(LOOP, ig_server.port)],
        "whatsapp.net": [(LOOP, fb_server.port)],
    }


@pytest.fixture
def make_recursor(stubs: dict[str, list[Server]], clock: FakeClock) -> Callable[..., Recursor]:
    def make(**kwargs: Any) -> Recursor:
        kwargs.setdefault("upstream_timeout", 0.3)
        return Recursor(kwargs.pop("stubs", stubs), clock=clock, **kwargs)

    return make


@pytest.fixture
def recursor(make_recursor: Callable[..., Recursor]) -> Recursor:
    return make_recursor()


# --- pure: stub zones -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stubs", "message"),
    [
        ({"facebook.com": [("a.ns.facebook.com", 53)]}, "not an IP address"),
        ({"facebook.com": []}, "has no servers"),
        ({"facebook.com": [(LOOP, 0)]}, "port out of range"),
        ({"facebook.com": [(LOOP, 53)], "Facebook.COM.": [(LOOP, 53)]}, "given twice"),
    ],
)
def test_parse_stubs_rejects_bad_config(stubs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_stubs(stubs)


def test_find_stub_picks_the_longest_zone() -> None:
    stubs = parse_stubs({"facebook.com": [(LOOP, 53)], "c10r.facebook.com": [("::1", 53)]})
    found = find_stub(name("star-mini.c10r.facebook.com"), stubs)
    assert found is not None
    assert found.servers == (("::1", 53),)
    parent = find_stub(name("www.facebook.com"), stubs)
    assert parent is not None
    assert parent.apex == name("facebook.com")
    assert find_stub(name("facebook.org"), stubs) is None


# --- pure: digesting authoritative answers ------------------------------------------------

STUBS = parse_stubs(
    {"facebook.com": [(LOOP, 53)], "instagram.com": [(LOOP, 53)], "whatsapp.net": [(LOOP, 53)]}
)
FB_STUB, IG_STUB, WA_STUB = STUBS


def auth_answer(
    qname: str, rdtype: str = "A", zones: Any = (FB, IG, NO_SOA), **faults: str
) -> dns.message.Message:
    response = answer(dns.message.make_query(qname, rdtype, flags=0), zones, faults)
    assert response is not None
    return response


def test_digest_keeps_the_chain_within_the_zone() -> None:
    step = digest(auth_answer("www.facebook.com"), name("www.facebook.com"), 1, FB_STUB, STUBS)
    assert step is not None
    assert texts(step.answer) == [
        "www.facebook.com. 3600 IN CNAME star-mini.c10r.facebook.com.",
        "star-mini.c10r.facebook.com. 60 IN A 127.0.0.1",
    ]
    assert (step.rcode, step.target, step.ttl) == (Rcode.NOERROR, None, 60)


def test_digest_drops_records_out_of_bailiwick() -> None:
    # A server for both zones returns the whole chain; from instagram.com's servers only
    # the instagram.com CNAME is trusted, facebook.com's servers are asked for the rest.
    response = auth_answer("www.instagram.com")
    assert len(response.answer) == 2
    step = digest(response, name("www.instagram.com"), 1, IG_STUB, STUBS)
    assert step is not None
    assert texts(step.answer) == [
        "www.instagram.com. 300 IN CNAME z-p42-instagram.c10r.facebook.com."
    ]
    assert step.target == name("z-p42-instagram.c10r.facebook.com")


@pytest.mark.parametrize("fault", ["servfail", "refused", "truncate"])
def test_digest_rejects_answers_that_call_for_another_server(fault: str) -> None:
    response = auth_answer("www.facebook.com", **{"*": fault})
    assert digest(response, name("www.facebook.com"), 1, FB_STUB, STUBS) is None


def test_digest_rejects_a_lame_empty_answer() -> None:
    query = dns.message.make_query("www.facebook.com", "A", flags=0)
    lame = dns.message.make_response(query)  # NOERROR, no AA, nothing: a referral at best
    assert digest(lame, name("www.facebook.com"), 1, FB_STUB, STUBS) is None


def test_digest_nxdomain_lives_for_the_soa_minimum_and_keeps_the_chain() -> None:
    step = digest(
        auth_answer("dangling.facebook.com"), name("dangling.facebook.com"), 1, FB_STUB, STUBS
    )
    assert step is not None
    assert step.rcode == Rcode.NXDOMAIN
    assert texts(step.answer) == ["dangling.facebook.com. 600 IN CNAME gone.facebook.com."]
    assert step.ttl == 30
    assert [rrset.ttl for rrset in step.authority] == [30]


def test_digest_negative_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    response = auth_answer("nope.facebook.com")
    response.authority = [
        dns.rrset.from_text("facebook.com.", 10, "IN", "SOA", FB_SOA)
    ]  # SOA TTL 10 < MINIMUM 30
    step = digest(response, name("nope.facebook.com"), 1, FB_STUB, STUBS)
    assert step is not None
    assert step.ttl == 10


def test_digest_negative_without_soa_falls_back() -> None:
    step = digest(auth_answer("nope.whatsapp.net"), name("nope.whatsapp.net"), 1, WA_STUB, STUBS)
    assert step is not None
    assert (step.rcode, step.ttl, step.authority) == (Rcode.NXDOMAIN, NEGATIVE_TTL_FALLBACK, ())


def test_digest_nodata_is_a_negative_noerror() -> None:
    step = digest(auth_answer("facebook.com", "MX"), name("facebook.com"), 15, FB_STUB, STUBS)
    assert step is not None
    assert (step.rcode, step.answer, step.ttl) == (Rcode.NOERROR, (), 30)


# --- pure: the cache ------------------------------------------------------------------------


def a_step(ttl: int = 60) -> Step:
    rrset = dns.rrset.from_text("x.facebook.com.", ttl, "IN", "A", "127.0.0.1")
    return Step(Rcode.NOERROR, (rrset,), (), None, ttl)


def key(text: str) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
    return name(text), dns.rdatatype.RdataType.A


def test_cache_counts_ttls_down_and_expires(clock: FakeClock) -> None:
    cache = Cache(10, clock)
    cache.put(key("x.facebook.com"), a_step(60))
    clock.advance(25.9)
    aged = cache.get(key("x.facebook.com"))
    assert aged is not None
    assert [rrset.ttl for rrset in aged.answer] == [35]
    clock.advance(34.1)
    assert cache.get(key("x.facebook.com")) is None
    assert len(cache) == 0


def test_cache_never_changes_stored_rrsets(clock: FakeClock) -> None:
    step = a_step(60)
    cache = Cache(10, clock)
    cache.put(key("x.facebook.com"), step)
    clock.advance(10)
    assert cache.get(key("x.facebook.com")) is not None
    assert step.answer[0].ttl == 60


def test_cache_is_bounded_and_evicts_least_recently_used(clock: FakeClock) -> None:
    cache = Cache(2, clock)
    cache.put(key("a.facebook.com"), a_step())
    cache.put(key("b.facebook.com"), a_step())
    assert cache.get(key("a.facebook.com")) is not None  # a is now the most recent
    cache.put(key("c.facebook.com"), a_step())
    assert len(cache) == 2
    assert cache.get(key("b.facebook.com")) is None
    assert cache.get(key("a.facebook.com")) is not None


def test_cache_does_not_keep_ttl_zero(clock: FakeClock) -> None:
    cache = Cache(10, clock)
    cache.put(key("x.facebook.com"), a_step(0))
    assert len(cache) == 0


def test_cache_flush_all_or_one_zone(clock: FakeClock) -> None:
    cache = Cache(10, clock)
    for owner in ("facebook.com", "www.facebook.com", "www.instagram.com"):
        cache.put(key(owner), a_step())
    assert cache.flush("Facebook.com") == 2
    assert cache.get(key("www.instagram.com")) is not None
    assert cache.flush() == 1
    assert len(cache) == 0


def test_cache_rejects_a_zero_bound(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Cache(0, clock)


# --- pure: what the client gets --------------------------------------------------------------


@pytest.mark.parametrize("rd", [True, False])
def test_build_response_is_recursive_not_authoritative(rd: bool) -> None:
    query = dns.message.make_query("www.facebook.com", "A", flags=dns.flags.RD if rd else 0)
    query.flags |= dns.flags.AA  # nonsense in a query; must not leak into the answer
    response = build_response(query, Resolution(Rcode.NOERROR, a_step().answer))
    assert response.flags & dns.flags.RA
    assert bool(response.flags & dns.flags.RD) is rd
    assert not response.flags & dns.flags.AA
    assert response.id == query.id
    assert len(response.answer) == 1


@pytest.mark.parametrize(
    ("make", "rcode"),
    [
        (lambda: dns.message.make_query("facebook.com", "A"), None),
        (lambda: dns.message.make_query("facebook.com", "ANY"), Rcode.NOTIMP),
        (lambda: dns.message.make_query("facebook.com", "AXFR"), Rcode.REFUSED),
        (lambda: dns.message.make_query("facebook.com", "A", rdclass="CH"), Rcode.REFUSED),
        (lambda: dns.message.make_query("facebook.com", "A", use_edns=1), Rcode.BADVERS),
        (lambda: dns.message.Message(), Rcode.FORMERR),
    ],
)
def test_early_rcode(make: Callable[[], dns.message.Message], rcode: Rcode | None) -> None:
    assert early_rcode(make()) == rcode


def test_early_rcode_not_a_query() -> None:
    notify = dns.message.make_query("facebook.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert early_rcode(notify) == Rcode.NOTIMP


# --- the recursor against real authoritative servers ----------------------------------------


async def test_resolves_a_through_a_cname_chain_across_two_zones(
    recursor: Recursor, fb_server: DnsServer, ig_server: DnsServer
) -> None:
    result = await recursor.resolve("www.instagram.com", "A")
    assert result.rcode == Rcode.NOERROR
    assert texts(result.answer) == [
        "www.instagram.com. 300 IN CNAME z-p42-instagram.c10r.facebook.com.",
        "z-p42-instagram.c10r.facebook.com. 120 IN A 127.0.0.2",
    ]
    assert ig_server.count("www.instagram.com") == 1
    assert fb_server.count("z-p42-instagram.c10r.facebook.com") == 1
    assert not result.cached


async def test_same_zone_chain_takes_one_upstream_query(
    recursor: Recursor, fb_server: DnsServer
) -> None:
    result = await recursor.resolve("www.facebook.com")
    assert texts(result.answer) == [
        "www.facebook.com. 3600 IN CNAME star-mini.c10r.facebook.com.",
        "star-mini.c10r.facebook.com. 60 IN A 127.0.0.1",
    ]
    assert fb_server.queries == 1
    assert recursor.counters.upstream_queries == 1


async def test_upstream_queries_do_not_ask_for_recursion(
    make_recursor: Callable[..., Recursor], stubs: dict[str, list[Server]]
) -> None:
    seen: list[dns.message.Message] = []

    async def spy(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        seen.append(query)
        return await dnspython_upstream(query, server, **kw)

    await make_recursor(upstream=spy).resolve("www.facebook.com")
    assert len(seen) == 1
    assert not seen[0].flags & dns.flags.RD
    assert seen[0].edns == 0


async def test_second_query_is_answered_from_cache_with_ttls_counted_down(
    recursor: Recursor, fb_server: DnsServer, clock: FakeClock
) -> None:
    await recursor.resolve("www.facebook.com")
    asked = fb_server.queries
    clock.advance(10)
    result = await recursor.resolve("WWW.Facebook.com")  # names are case-insensitive
    assert fb_server.queries == asked
    assert result.cached
    assert [rrset.ttl for rrset in result.answer] == [3590, 50]
    assert recursor.counters.cache_hits == 1
    assert recursor.counters.queries == 2


async def test_counters_snapshot_and_reset(recursor: Recursor) -> None:
    await recursor.resolve("www.facebook.com")
    await recursor.resolve("www.facebook.com")
    assert recursor.counters.snapshot() == {
        "queries": 2,
        "cache_hits": 1,
        "upstream_queries": 1,
        "upstream_failures": 0,
        "coalesced": 0,
        "servfails": 0,
        "refused": 0,
    }
    recursor.counters.reset()
    assert set(recursor.counters.snapshot().values()) == {0}


@pytest.mark.parametrize("outage", ["timeout", "closed"])
async def test_cache_outlives_the_outage_until_ttl_then_servfail(
    recursor: Recursor, fb_server: DnsServer, clock: FakeClock, outage: str
) -> None:
    """4 Oct 2021: prefixes withdrawn; caches answer until the TTL runs out, then SERVFAIL."""
    before = await recursor.resolve("www.facebook.com")
    assert before.rcode == Rcode.NOERROR
    if outage == "timeout":
        fb_server.set_fault("*", "timeout")
    else:
        await fb_server.close()
    clock.advance(59)
    during = await recursor.resolve("www.facebook.com")
    assert during.rcode == Rcode.NOERROR
    assert during.cached
    assert [rrset.ttl for rrset in during.answer] == [3541, 1]
    assert recursor.counters.upstream_queries == 1
    clock.advance(1)
    expired = await recursor.resolve("www.facebook.com")
    assert expired.rcode == Rcode.SERVFAIL
    assert expired.answer == ()
    assert recursor.counters.servfails == 1
    assert recursor.counters.upstream_failures == 1
    # Not cached: every later question tries again (that is the 2021 query storm).
    again = await recursor.resolve("www.facebook.com")
    assert again.rcode == Rcode.SERVFAIL
    assert recursor.counters.upstream_queries == 3


async def test_recovers_as_soon_as_the_servers_answer_again(
    recursor: Recursor, fb_server: DnsServer
) -> None:
    fb_server.set_fault("facebook.com", "timeout")
    assert (await recursor.resolve("m.facebook.com")).rcode == Rcode.SERVFAIL
    fb_server.clear_faults()
    result = await recursor.resolve("facebook.com")
    assert result.rcode == Rcode.NOERROR
    assert texts(result.answer) == ["facebook.com. 300 IN A 127.0.0.10"]


async def test_nxdomain_is_cached_for_the_soa_minimum(
    recursor: Recursor, fb_server: DnsServer, clock: FakeClock
) -> None:
    first = await recursor.resolve("nope.facebook.com")
    assert first.rcode == Rcode.NXDOMAIN
    assert [(rrset.rdtype, rrset.ttl) for rrset in first.authority] == [(dns.rdatatype.SOA, 30)]
    clock.advance(29)
    cached = await recursor.resolve("nope.facebook.com")
    assert cached.rcode == Rcode.NXDOMAIN
    assert cached.cached
    assert [rrset.ttl for rrset in cached.authority] == [1]
    assert fb_server.count("nope.facebook.com") == 1
    clock.advance(1)
    assert (await recursor.resolve("nope.facebook.com")).rcode == Rcode.NXDOMAIN
    assert fb_server.count("nope.facebook.com") == 2


async def test_nodata_is_cached_too(
    recursor: Recursor, fb_server: DnsServer, clock: FakeClock
) -> None:
    for _ in range(2):
        result = await recursor.resolve("facebook.com", "MX")
        assert (result.rcode, result.answer) == (Rcode.NOERROR, ())
        assert len(result.authority) == 1
    assert fb_server.count("facebook.com", "MX") == 1


async def test_negative_answer_without_soa_is_cached_for_the_fallback(
    recursor: Recursor, fb_server: DnsServer, clock: FakeClock
) -> None:
    assert (await recursor.resolve("nope.whatsapp.net")).rcode == Rcode.NXDOMAIN
    clock.advance(NEGATIVE_TTL_FALLBACK - 1)
    assert (await recursor.resolve("nope.whatsapp.net")).cached
    clock.advance(1)
    assert not (await recursor.resolve("nope.whatsapp.net")).cached
    assert fb_server.count("nope.whatsapp.net") == 2


async def test_names_outside_every_stub_zone_are_refused(
    recursor: Recursor, fb_server: DnsServer, ig_server: DnsServer
) -> None:
    result = await recursor.resolve("www.example.org")
    assert result.rcode == Rcode.REFUSED
    assert fb_server.queries == ig_server.queries == 0
    assert recursor.counters.refused == 1


@pytest.mark.parametrize("fault", ["servfail", "refused"])
async def test_upstream_error_is_servfail_and_not_cached(
    recursor: Recursor, fb_server: DnsServer, fault: str
) -> None:
    fb_server.set_fault("facebook.com", fault)
    assert (await recursor.resolve("www.facebook.com")).rcode == Rcode.SERVFAIL
    assert recursor.cache_size == 0
    fb_server.clear_faults()
    assert (await recursor.resolve("www.facebook.com")).rcode == Rcode.NOERROR
    assert fb_server.count("www.facebook.com") == 2


async def test_servers_of_a_zone_are_tried_in_turn(
    make_recursor: Callable[..., Recursor], fb_server: DnsServer, ig_server: DnsServer
) -> None:
    silent = DnsServer(FB, host=LOOP)
    async with silent:
        silent.set_fault("*", "timeout")
        recursor = make_recursor(
            stubs={"facebook.com": [(LOOP, silent.port), (LOOP, fb_server.port)]},
            upstream_timeout=0.2,
        )
        result = await recursor.resolve("www.facebook.com")
    assert result.rcode == Rcode.NOERROR
    assert silent.queries == fb_server.queries == 1
    assert recursor.counters.upstream_failures == 1


async def test_a_hanging_upstream_is_cut_off_at_upstream_timeout(
    make_recursor: Callable[..., Recursor],
) -> None:
    async def hang(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        await asyncio.sleep(3600)  # ignores the timeout it is given, like a broken fake
        raise AssertionError("unreachable")

    recursor = make_recursor(upstream=hang, upstream_timeout=0.05)
    async with asyncio.timeout(2):
        assert (await recursor.resolve("www.facebook.com")).rcode == Rcode.SERVFAIL


async def test_an_answer_to_another_question_is_not_trusted(
    make_recursor: Callable[..., Recursor],
) -> None:
    async def liar(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        other = dns.message.make_query("www.facebook.com", "A", flags=0)
        response = answer(other, (FB,))
        assert response is not None
        return response  # right question, wrong id: a spoofing attempt

    recursor = make_recursor(upstream=liar)
    assert (await recursor.resolve("www.facebook.com")).rcode == Rcode.SERVFAIL
    assert recursor.counters.upstream_failures == 1


async def test_identical_questions_in_flight_share_one_upstream_query(
    make_recursor: Callable[..., Recursor], fb_server: DnsServer
) -> None:
    gate = asyncio.Event()

    async def gated(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        await gate.wait()
        return await dnspython_upstream(query, server, **kw)

    recursor = make_recursor(upstream=gated, upstream_timeout=5.0)
    askers = [asyncio.create_task(recursor.resolve("www.facebook.com")) for _ in range(10)]
    await until(lambda: recursor.counters.coalesced == 9)
    assert recursor.inflight == 1
    gate.set()
    results = await asyncio.gather(*askers)
    assert {r.rcode for r in results} == {Rcode.NOERROR}
    assert len({tuple(texts(r.answer)) for r in results}) == 1
    assert fb_server.count("www.facebook.com") == 1
    assert recursor.counters.upstream_queries == 1
    assert recursor.inflight == 0


async def test_one_asker_giving_up_does_not_cancel_the_shared_lookup(
    make_recursor: Callable[..., Recursor],
) -> None:
    gate = asyncio.Event()
    calls = 0

    async def gated(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        nonlocal calls
        calls += 1
        await gate.wait()
        return await dnspython_upstream(query, server, **kw)

    recursor = make_recursor(upstream=gated, upstream_timeout=5.0)
    first = asyncio.create_task(recursor.resolve("www.facebook.com"))
    second = asyncio.create_task(recursor.resolve("www.facebook.com"))
    await until(lambda: recursor.counters.coalesced == 1)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    gate.set()
    assert (await second).rcode == Rcode.NOERROR
    assert calls == 1


async def test_a_lookup_nobody_waits_for_is_cancelled(
    make_recursor: Callable[..., Recursor],
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hang(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    recursor = make_recursor(upstream=hang, upstream_timeout=60)
    asker = asyncio.create_task(recursor.resolve("www.facebook.com"))
    await started.wait()
    asker.cancel()
    await asyncio.gather(asker, return_exceptions=True)
    async with asyncio.timeout(2):
        await cancelled.wait()
    assert recursor.inflight == 0


async def test_cache_stays_bounded_under_random_names(
    make_recursor: Callable[..., Recursor], fb_server: DnsServer
) -> None:
    recursor = make_recursor(max_cache_entries=5)
    for i in range(20):
        assert (await recursor.resolve(f"random-{i}.facebook.com")).rcode == Rcode.NXDOMAIN
    assert recursor.cache_size == 5
    await recursor.resolve("random-19.facebook.com")  # the newest is still there
    await recursor.resolve("random-0.facebook.com")  # the oldest was evicted
    assert fb_server.count("random-19.facebook.com") == 1
    assert fb_server.count("random-0.facebook.com") == 2


async def test_truncated_answer_is_retried_over_tcp(
    recursor: Recursor, fb_server: DnsServer
) -> None:
    fb_server.set_fault("facebook.com", "truncate")
    result = await recursor.resolve("www.facebook.com")
    assert result.rcode == Rcode.NOERROR
    assert len(result.answer) == 2
    assert (fb_server.udp_queries, fb_server.tcp_queries) == (1, 1)
    assert recursor.counters.upstream_queries == 2


async def test_flush_forgets_everything(recursor: Recursor, fb_server: DnsServer) -> None:
    await recursor.resolve("www.facebook.com")
    await recursor.resolve("www.instagram.com")
    assert recursor.flush("facebook.com") == 2  # www and the z-p42 target
    assert recursor.cache_size == 1
    assert recursor.flush() == 1
    await recursor.resolve("www.facebook.com")
    assert fb_server.count("www.facebook.com") == 2


async def test_chain_of_max_hops_is_followed(recursor: Recursor) -> None:
    result = await recursor.resolve("c1.facebook.com")
    assert result.rcode == Rcode.NOERROR
    assert len(result.answer) == MAX_CNAME_HOPS + 1


@pytest.mark.parametrize(
    "qname",
    [
        "c0.facebook.com",  # MAX_CNAME_HOPS + 1 CNAMEs
        "loop1.facebook.com",  # a loop within one zone
        "away.facebook.com",  # the chain leaves every stub zone; no root to ask
    ],
)
async def test_chains_that_cannot_be_finished_are_servfail(recursor: Recursor, qname: str) -> None:
    assert (await recursor.resolve(qname)).rcode == Rcode.SERVFAIL


async def test_cname_loop_across_zones_is_servfail(
    make_recursor: Callable[..., Recursor], fb_server: DnsServer
) -> None:
    looped = Zone.from_records(
        "instagram.com", {"www": [("CNAME", 60, "ig.facebook.com.")]}
    )  # ig.facebook.com CNAME www.instagram.com -> back again
    async with DnsServer(looped, host=LOOP) as ig:
        recursor = make_recursor(
            stubs={"facebook.com": [(LOOP, fb_server.port)], "instagram.com": [(LOOP, ig.port)]}
        )
        assert (await recursor.resolve("ig.facebook.com")).rcode == Rcode.SERVFAIL
        assert ig.queries == 1


def test_recursor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="upstream_timeout"):
        Recursor({"facebook.com": [(LOOP, 53)]}, upstream_timeout=0)


# --- end to end through RecursorServer ------------------------------------------------------


@pytest.fixture
async def resolver_server(recursor: Recursor) -> AsyncIterator[RecursorServer]:
    async with RecursorServer(recursor, LOOP) as server:
        yield server


async def test_end_to_end_over_udp(resolver_server: RecursorServer, fb_server: DnsServer) -> None:
    query = dns.message.make_query("www.facebook.com", "A")
    response = await dns.asyncquery.udp(query, LOOP, port=resolver_server.port, timeout=2)
    assert response.rcode() == Rcode.NOERROR
    assert response.flags & dns.flags.RA
    assert response.flags & dns.flags.RD
    assert not response.flags & dns.flags.AA
    assert texts(response.answer) == [
        "www.facebook.com. 3600 IN CNAME star-mini.c10r.facebook.com.",
        "star-mini.c10r.facebook.com. 60 IN A 127.0.0.1",
    ]
    assert resolver_server.recursor.counters.queries == 1


async def test_end_to_end_over_tcp_without_rd(
    resolver_server: RecursorServer, fb_server: DnsServer
) -> None:
    query = dns.message.make_query("www.instagram.com", "A", flags=0)
    response = await dns.asyncquery.tcp(query, LOOP, port=resolver_server.port, timeout=2)
    assert response.rcode() == Rcode.NOERROR
    assert not response.flags & dns.flags.RD
    assert response.flags & dns.flags.RA
    assert len(response.answer) == 2


async def test_end_to_end_servfail_and_refused(
    resolver_server: RecursorServer, fb_server: DnsServer
) -> None:
    fb_server.set_fault("*", "servfail")
    port = resolver_server.port
    broken = await dns.asyncquery.udp(
        dns.message.make_query("www.facebook.com", "A"), LOOP, port=port, timeout=2
    )
    assert broken.rcode() == Rcode.SERVFAIL
    outside = await dns.asyncquery.udp(
        dns.message.make_query("www.example.org", "A"), LOOP, port=port, timeout=2
    )
    assert outside.rcode() == Rcode.REFUSED
    anything = await dns.asyncquery.udp(
        dns.message.make_query("facebook.com", "ANY"), LOOP, port=port, timeout=2
    )
    assert anything.rcode() == Rcode.NOTIMP


async def test_end_to_end_big_answer_goes_udp_tc_then_tcp(
    resolver_server: RecursorServer, fb_server: DnsServer
) -> None:
    # 1000 A records: truncated upstream and to the client, whole over TCP both times.
    fb_server.set_fault("facebook.com", "huge")
    query = dns.message.make_query("big.facebook.com", "A", use_edns=0, payload=1232)
    port = resolver_server.port
    over_udp = await dns.asyncquery.udp(query, LOOP, port=port, timeout=2)
    assert over_udp.flags & dns.flags.TC
    over_tcp = await dns.asyncquery.tcp(query, LOOP, port=port, timeout=2)
    assert len(over_tcp.answer[0]) == 1000
    assert fb_server.tcp_queries == 1  # the second client query came from the cache


async def test_garbage_gets_formerr_and_responses_are_ignored(
    resolver_server: RecursorServer,
) -> None:
    reply = await resolver_server.handle(b"\x12\x34\x01\x00" + b"\x00" * 9, tcp=False)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == Rcode.FORMERR
    response = dns.message.make_response(dns.message.make_query("facebook.com", "A"))
    assert await resolver_server.handle(response.to_wire(), tcp=False) is None


async def test_close_abandons_questions_in_progress(
    make_recursor: Callable[..., Recursor],
) -> None:
    started = asyncio.Event()

    async def hang(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    recursor = make_recursor(upstream=hang, upstream_timeout=60)
    server = RecursorServer(recursor, LOOP)
    await server.start()
    client = asyncio.create_task(
        dns.asyncquery.udp(
            dns.message.make_query("www.facebook.com", "A"), LOOP, port=server.port, timeout=0.5
        )
    )
    await started.wait()
    await server.close()
    assert recursor.inflight == 0
    with pytest.raises(dns.exception.Timeout):
        await client
    with pytest.raises(RuntimeError, match="not started"):
        _ = RecursorServer(recursor, LOOP).port


async def test_overload_drops_datagrams_beyond_max_pending(
    make_recursor: Callable[..., Recursor],
) -> None:
    async def hang(query: dns.message.Message, server: Server, **kw: Any) -> dns.message.Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    recursor = make_recursor(upstream=hang, upstream_timeout=60)
    async with RecursorServer(recursor, LOOP, max_pending=2) as server:
        wires = [dns.message.make_query(f"n{i}.facebook.com", "A").to_wire() for i in range(3)]
        for wire in wires:
            # Straight in, no client socket: nothing is ever answered, close() abandons all.
            server._on_datagram(wire, (LOOP, 9))
        assert server.dropped == 1
        await until(lambda: recursor.inflight == 2)
    assert recursor.inflight == 0


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_ipv6_loopback_end_to_end() -> None:
    async with DnsServer((FB,), host="::1") as auth:
        recursor = Recursor({"facebook.com": [("::1", auth.port)]}, upstream_timeout=0.5)
        async with RecursorServer(recursor, "::1") as server:
            query = dns.message.make_query("star-mini.c10r.facebook.com", "AAAA")
            response = await dns.asyncquery.udp(query, "::1", port=server.port, timeout=2)
    assert texts(response.answer) == ["star-mini.c10r.facebook.com. 60 IN AAAA ::1"]
