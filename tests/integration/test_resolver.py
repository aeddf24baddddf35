"""The resolver in front of every TCP, TLS and HTTP probe, against real DNS servers on
loopback: the simulator's authoritative server, and small servers that answer the way odd
or broken resolvers do (a CNAME left unchased, a wrong ID, a question not asked)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from exporter.model import Reason
from exporter.net.dnsclient import DnsFailure
from exporter.net.resolver import MAX_CNAME_HOPS, Resolver
from exporter.sim import dnsserver
from exporter.sim.dnsserver import DnsListener, DnsServer
from exporter.spec import Endpoint
from tests.conftest import LOOPBACK_POLICY

Answerer = Callable[[dns.message.Message, bool], dns.message.Message | None]


def resolver_for(port: int) -> Resolver:
    return Resolver([Endpoint("127.0.0.1", port)], LOOPBACK_POLICY, attempt_timeout=0.5)


def deadline(seconds: float = 2.0) -> float:
    return time.monotonic() + seconds


@pytest.fixture
def resolver(dns_server: DnsServer) -> Resolver:
    return resolver_for(dns_server.port)


@pytest.fixture
async def odd_server() -> AsyncIterator[Callable[[Answerer], Awaitable[int]]]:
    """Starts a server answering each query with answerer(query, over_tcp); its port."""
    listeners: list[DnsListener] = []

    async def start(answerer: Answerer) -> int:
        async def handle(wire: bytes, *, tcp: bool) -> bytes | None:
            response = answerer(dns.message.from_wire(wire), tcp)
            return None if response is None else response.to_wire()

        listener = DnsListener(
            handle, "127.0.0.1", 0, name="odd", tcp_idle_timeout=2.0, max_tcp_connections=4
        )
        await listener.start()
        listeners.append(listener)
        return listener.port

    yield start
    for listener in listeners:
        await listener.close()


def _answer(query: dns.message.Message, *records: tuple[str, str, str]) -> dns.message.Message:
    response = dns.message.make_response(query)
    for owner, rdtype, text in records:
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", rdtype, text))
    return response


async def test_a_chain_the_server_followed(resolver: Resolver) -> None:
    assert await resolver.resolve("www.facebook.com", "ip4", deadline=deadline()) == ["127.0.0.1"]
    assert await resolver.resolve("www.facebook.com", "ip6", deadline=deadline()) == ["::1"]


async def test_auto_takes_ipv6_when_there_is_no_ipv4(resolver: Resolver) -> None:
    assert await resolver.resolve("v6only.facebook.com", "auto", deadline=deadline()) == ["::1"]
    with pytest.raises(DnsFailure) as failure:
        await resolver.resolve("v6only.facebook.com", "ip4", deadline=deadline())
    assert failure.value.reason is Reason.DNS_NO_ANSWER


@pytest.mark.parametrize(
    ("fault", "reason", "rcode"),
    [
        ("nxdomain", Reason.DNS_NXDOMAIN, "NXDOMAIN"),
        ("servfail", Reason.DNS_SERVFAIL, "SERVFAIL"),
        ("refused", Reason.DNS_REFUSED, "REFUSED"),
    ],
)
async def test_rcodes_are_failures_named_by_the_rcode(
    dns_server: DnsServer, resolver: Resolver, fault: str, reason: Reason, rcode: str
) -> None:
    dns_server.set_fault("facebook.com", fault)
    with pytest.raises(DnsFailure) as failure:
        await resolver.resolve("www.facebook.com", "ip4", deadline=deadline())
    assert (failure.value.reason, failure.value.rcode) == (reason, rcode)
    assert f"answered {rcode} for www.facebook.com" in failure.value.detail


async def test_a_truncated_answer_is_asked_again_over_tcp(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.set_fault("facebook.com", "truncate")
    assert await resolver.resolve("www.facebook.com", "ip4", deadline=deadline()) == ["127.0.0.1"]


async def test_a_thousand_addresses_come_over_tcp(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.set_fault("facebook.com", "huge")
    found = await resolver.resolve("facebook.com", "ip4", deadline=deadline())
    served = dnsserver.huge_rrset(dns.name.from_text("facebook.com"))
    assert len(found) == dnsserver.HUGE_COUNT
    assert set(found) == {rd.to_text() for rd in served}


async def test_a_cname_the_resolver_did_not_chase_is_chased(
    odd_server: Callable[[Answerer], Awaitable[int]],
) -> None:
    def answer(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        name = query.question[0].name.to_text()
        if name == "www.example.":
            return _answer(query, (name, "CNAME", "edge.Example."))
        return _answer(query, (name, "A", "127.0.0.7"))

    resolver = resolver_for(await odd_server(answer))
    assert await resolver.resolve("www.example", "ip4", deadline=deadline()) == ["127.0.0.7"]


async def test_a_cname_loop_ends(odd_server: Callable[[Answerer], Awaitable[int]]) -> None:
    asked: list[str] = []

    def answer(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        name = query.question[0].name.to_text()
        asked.append(name)
        other = "b.example." if name == "a.example." else "a.example."
        return _answer(query, (name, "CNAME", other))

    resolver = resolver_for(await odd_server(answer))
    with pytest.raises(DnsFailure) as failure:
        await resolver.resolve("a.example", "ip4", deadline=deadline())
    assert failure.value.reason is Reason.DNS_ERROR
    assert "CNAME chain for a.example is too long" in failure.value.detail
    assert len(asked) == MAX_CNAME_HOPS


def _other_id(query: dns.message.Message, tcp: bool) -> dns.message.Message:
    response = _answer(query, ("a.example.", "A", "127.0.0.7"))
    response.id ^= 0x5A5A
    return response


def _other_question(query: dns.message.Message, tcp: bool) -> dns.message.Message:
    return _answer(dns.message.make_query("b.example", "A"), ("b.example.", "A", "127.0.0.7"))


def _not_dns(query: dns.message.Message, tcp: bool) -> dns.message.Message:
    class Garbage(dns.message.Message):
        def to_wire(self, *args: object, **kwargs: object) -> bytes:
            return b"\x00\x01 not a DNS message"

    return Garbage()


@pytest.mark.parametrize("answerer", [_other_id, _other_question, _not_dns])
async def test_an_answer_that_is_not_to_our_query_is_a_dns_error(
    odd_server: Callable[[Answerer], Awaitable[int]], answerer: Answerer
) -> None:
    resolver = resolver_for(await odd_server(answerer))
    with pytest.raises(DnsFailure) as failure:
        await resolver.resolve("a.example", "ip4", deadline=deadline())
    assert failure.value.reason is Reason.DNS_ERROR
    assert "malformed answer" in failure.value.detail


async def test_a_mixed_case_echo_of_the_question_is_our_answer(
    odd_server: Callable[[Answerer], Awaitable[int]],
) -> None:
    """0x20: a resolver may echo the name's case as it sent it upstream."""

    def answer(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        echo = dns.message.make_query("A.eXaMpLe", "A")
        echo.id, echo.flags = query.id, query.flags
        response = dns.message.make_response(echo)
        response.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "127.0.0.7"))
        return response

    resolver = resolver_for(await odd_server(answer))
    assert await resolver.resolve("a.example", "ip4", deadline=deadline()) == ["127.0.0.7"]


async def test_servfail_from_one_resolver_moves_to_the_next(
    dns_server: DnsServer, odd_server: Callable[[Answerer], Awaitable[int]]
) -> None:
    def servfail(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
        response.question = []  # some servers leave it out of a failure
        return response

    broken = await odd_server(servfail)
    resolver = Resolver(
        [Endpoint("127.0.0.1", broken), Endpoint("127.0.0.1", dns_server.port)],
        LOOPBACK_POLICY,
        attempt_timeout=0.5,
    )
    assert await resolver.resolve("m.facebook.com", "ip4", deadline=deadline()) == ["127.0.0.1"]


async def test_the_tcp_answer_is_taken_whatever_its_tc_flag(
    odd_server: Callable[[Answerer], Awaitable[int]],
) -> None:
    """TC over TCP means nothing more can come: what it holds is the answer."""

    def answer(query: dns.message.Message, tcp: bool) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.TC
        if tcp:
            response.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "127.0.0.7"))
        return response

    resolver = resolver_for(await odd_server(answer))
    assert await resolver.resolve("a.example", "ip4", deadline=deadline()) == ["127.0.0.7"]


@pytest.mark.parametrize("name", ["a" * 64 + ".example", "a..example", ("a" * 60 + ".") * 5])
async def test_a_name_dns_cannot_carry_is_a_dns_error(resolver: Resolver, name: str) -> None:
    """A redirect may lead anywhere: a name no query can carry fails as DNS, named."""
    with pytest.raises(DnsFailure) as failure:
        await resolver.resolve(name, "ip4", deadline=deadline())
    assert failure.value.reason is Reason.DNS_ERROR
    assert "is not a DNS name" in failure.value.detail
