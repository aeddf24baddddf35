"""DNS queries the way the probes need them: to given servers, within a deadline, policed.

The exporter never uses the libc resolver: every lookup (DNS checks, and the names that
TCP/TLS/HTTP checks connect to) goes through here, so the time is measured and a DNS
failure reads the same in every check. Two ways of asking share how servers are tried
(ask_servers): `query` gives DNS checks dnspython's whole message; `lookup_addresses` gives
the resolver addresses on a lean path (dnswire), the lookup in front of every other probe.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from exporter.egress import EgressPolicy
from exporter.model import Reason
from exporter.spec import Endpoint

from . import dnswire

# Per-attempt wait for one server when the caller's deadline leaves more time.
DEFAULT_ATTEMPT_TIMEOUT = 1.0
# The lookups the resolver makes, by their type's number on the wire.
ADDRESS_TYPES = {"A": 1, "AAAA": 28}
Reply = TypeVar("Reply")  # an answer as one way of asking reads it

RCODE_REASONS = {
    dns.rcode.NXDOMAIN: Reason.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: Reason.DNS_SERVFAIL,
    dns.rcode.REFUSED: Reason.DNS_REFUSED,
}


def rcode_number(text: str) -> int | None:
    """The numeric rcode for its text ("SERVFAIL" -> 2), as exported; None if unknown."""
    try:
        return int(dns.rcode.from_text(text))
    except (dns.rcode.UnknownRcode, ValueError):
        return None


class DnsFailure(Exception):
    """A lookup that failed in a way the probe reports as one of the dns_* reasons."""

    def __init__(self, reason: Reason, detail: str, rcode: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.rcode = rcode


@dataclass(frozen=True, slots=True)
class Answer:
    response: dns.message.Message
    server: Endpoint

    @property
    def rcode(self) -> str:
        return dns.rcode.to_text(self.response.rcode())

    @property
    def authoritative(self) -> bool:
        return bool(self.response.flags & dns.flags.AA)


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


async def udp_roundtrip(wire: bytes, host: str, port: int, timeout: float) -> bytes:
    """Send one datagram and return the first one back, on a connected socket: an ICMP
    "unreachable" surfaces at once as an OSError instead of leaving us to wait out the
    timeout, and datagrams from anywhere but (host, port) never reach it.

    A plain non-blocking socket and the loop's sock_* calls, as dns.asyncquery.udp would
    do but without its transport and protocol pair per query, which cost more CPU than the
    exchange itself (docs/benchmarks.md). Raises dns.exception.Timeout or OSError.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))  # UDP: no packet leaves, it fixes the peer
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(sock, wire)
                return await loop.sock_recv(sock, 65535)
        except TimeoutError:
            raise dns.exception.Timeout(timeout=timeout) from None


async def udp_exchange(
    request: dns.message.Message,
    host: str,
    port: int,
    timeout: float,
    *,
    ignore_trailing: bool = False,
) -> dns.message.Message:
    """One query over UDP (udp_roundtrip), the answer parsed by dnspython. Same outcomes as
    dns.asyncquery.udp: dns.exception.Timeout, OSError, or a DNSException for a malformed
    answer or one that does not answer this query."""
    wire = await udp_roundtrip(request.to_wire(), host, port, timeout)
    response = dns.message.from_wire(
        wire, keyring=request.keyring, request_mac=request.mac, ignore_trailing=ignore_trailing
    )
    if not request.is_response(response):
        raise dns.query.BadResponse
    return response


async def _ask_once(
    request: dns.message.Message, server: Endpoint, timeout: float, use_tcp: bool
) -> dns.message.Message:
    if not use_tcp:
        response = await udp_exchange(
            request, server.host, server.port, timeout, ignore_trailing=True
        )
        if not response.flags & dns.flags.TC:
            return response
        # Truncated: the full answer only comes over TCP, as a stub resolver would retry.
    return await dns.asyncquery.tcp(request, server.host, timeout=timeout, port=server.port)


async def query(
    name: str,
    rdtype: str | int,
    servers: Sequence[Endpoint],
    policy: EgressPolicy,
    *,
    deadline: float,
    what: str = "resolver",
    recursion_desired: bool = True,
    use_tcp: bool = False,
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
) -> Answer:
    """The whole answer for (name, rdtype), parsed by dnspython, from the first server that
    gives a definite one (ask_servers says how they are tried): what the DNS checks judge.
    """
    request = dns.message.make_query(name, rdtype)
    if not recursion_desired:
        request.flags &= ~dns.flags.RD

    async def ask(server: Endpoint, timeout: float) -> dns.message.Message:
        return await _ask_once(request, server, timeout, use_tcp)

    response, server = await ask_servers(
        ask, lambda m: m.rcode(), servers, policy, deadline, what, attempt_timeout
    )
    return Answer(response, server)


@dataclass(frozen=True, slots=True)
class AddressAnswer:
    reply: dnswire.AddressReply
    server: Endpoint


async def lookup_addresses(
    name: str,
    rdtype: str,
    servers: Sequence[Endpoint],
    policy: EgressPolicy,
    *,
    deadline: float,
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
) -> AddressAnswer:
    """An A or AAAA lookup for the resolver, on the lean path (dnswire): a prebuilt query,
    only the rcode, addresses and CNAME read. Servers are tried as `query` tries them; a
    truncated answer is asked again over TCP, as a stub resolver would."""
    try:
        question = dnswire.query_wire(name, ADDRESS_TYPES[rdtype])
    except dns.exception.DNSException as exc:  # a label over 63 bytes, an empty one...
        raise DnsFailure(Reason.DNS_ERROR, f"{name!r} is not a DNS name: {exc}") from None
    wire = dnswire.with_id(question, secrets.randbits(16))

    async def ask(server: Endpoint, timeout: float) -> dnswire.AddressReply:
        answer = await udp_roundtrip(wire, server.host, server.port, timeout)
        reply = dnswire.read_reply(answer, wire)
        if not reply.truncated:
            return reply
        response = await dns.asyncquery.tcp(
            dns.message.from_wire(wire), server.host, timeout=timeout, port=server.port
        )
        return dnswire.read_reply(response.to_wire(), wire)

    reply, server = await ask_servers(
        ask, lambda r: r.rcode, servers, policy, deadline, "resolver", attempt_timeout
    )
    return AddressAnswer(reply, server)


async def ask_servers(
    ask: Callable[[Endpoint, float], Awaitable[Reply]],
    rcode_of: Callable[[Reply], int],
    servers: Sequence[Endpoint],
    policy: EgressPolicy,
    deadline: float,
    what: str,
    attempt_timeout: float,
) -> tuple[Reply, Endpoint]:
    """Ask the servers in turn until one gives a definite answer (NOERROR or NXDOMAIN).

    SERVFAIL / REFUSED / timeouts move on to the next server, round-robin, until the
    deadline (a monotonic time). A server that fails hard (ICMP unreachable, port closed)
    is not asked again: when all have, the lookup ends at once with dns_error instead of
    spinning until the deadline. The last answer seen is returned when no server gave a
    definite one, so the caller can report its rcode; with no answer at all: DnsFailure.
    Raises PolicyViolation before sending anything when no server is allowed.
    """
    allowed = [s for s in servers if policy.permits(s.host)]
    if not allowed:
        blocked = servers[0].host if servers else "(none configured)"
        policy.require(blocked, what)
    last_answer: tuple[Reply, Endpoint] | None = None
    last_error = "no answer"
    timed_out = False
    unreachable: set[Endpoint] = set()
    attempt = 0
    while _remaining(deadline) > 0 and len(unreachable) < len(allowed):
        server = allowed[attempt % len(allowed)]
        attempt += 1
        if server in unreachable:
            continue
        timeout = min(attempt_timeout, _remaining(deadline))
        try:
            reply = await ask(server, timeout)
        except dns.exception.Timeout:
            last_error, timed_out = f"{what} {server} did not answer within {timeout:.2f}s", True
            continue
        except (OSError, EOFError) as exc:
            last_error = f"{what} {server} unreachable: {getattr(exc, 'strerror', None) or exc}"
            unreachable.add(server)
            continue
        except dns.exception.DNSException as exc:
            raise DnsFailure(
                Reason.DNS_ERROR, f"{what} {server}: malformed answer: {exc}"
            ) from None
        last_answer = (reply, server)
        if rcode_of(reply) in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return last_answer
        if attempt >= 2 * len(allowed):
            break  # every server said no, twice: that is the answer
    if last_answer is not None:
        return last_answer
    only_unreachable = len(unreachable) == len(allowed) and not timed_out
    raise DnsFailure(Reason.DNS_ERROR if only_unreachable else Reason.DNS_TIMEOUT, last_error)


def failure_for_rcode(answer: Answer, name: str) -> DnsFailure | None:
    """The failure an rcode means, or None for NOERROR."""
    return failure_for(answer.response.rcode(), answer.server, name)


def failure_for(rcode: int, server: Endpoint, name: str) -> DnsFailure | None:
    reason = RCODE_REASONS.get(rcode)
    if reason is None and rcode != dns.rcode.NOERROR:
        reason = Reason.DNS_ERROR
    if reason is None:
        return None
    text = dns.rcode.to_text(rcode)
    return DnsFailure(reason, f"{server} answered {text} for {name}", text)


def records(answer: Answer, rdtype: str | int) -> list[str]:
    """Texts of the answer records of that type, whatever owner (a CNAME chain ends there)."""
    wanted = dns.rdatatype.RdataType.make(rdtype)
    return [
        rd.to_text() for rrset in answer.response.answer if rrset.rdtype == wanted for rd in rrset
    ]
