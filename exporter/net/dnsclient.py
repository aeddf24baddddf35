"""DNS queries the way the probes need them: to given servers, within a deadline, policed.

The exporter never uses the libc resolver: every lookup (DNS checks, and the names that
TCP/TLS/HTTP checks connect to) goes through here, so the time is measured and a DNS
failure reads the same in every check.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

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

# Per-attempt wait for one server when the caller's deadline leaves more time.
DEFAULT_ATTEMPT_TIMEOUT = 1.0

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


async def udp_exchange(
    request: dns.message.Message,
    host: str,
    port: int,
    timeout: float,
    *,
    ignore_trailing: bool = False,
) -> dns.message.Message:
    """One UDP exchange on a connected socket, so an ICMP "unreachable" surfaces at once
    as an OSError instead of leaving us to wait out the timeout.

    A plain non-blocking socket and the loop's sock_* calls, as dns.asyncquery.udp would
    do but without its transport and protocol pair per query, which cost more CPU than the
    exchange itself (docs/benchmarks.md). Same outcomes: dns.exception.Timeout, OSError,
    or a DNSException for a malformed answer or one that does not answer this query. The
    connected socket only receives from (host, port): datagrams from elsewhere never reach it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect((host, port))  # UDP: no packet leaves, it fixes the peer
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(sock, request.to_wire())
                wire = await loop.sock_recv(sock, 65535)
        except TimeoutError:
            raise dns.exception.Timeout(timeout=timeout) from None
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
    request = dns.message.make_query(name, rdtype)
    if not recursion_desired:
        request.flags &= ~dns.flags.RD
    last_answer: Answer | None = None
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
            response = await _ask_once(request, server, timeout, use_tcp)
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
        last_answer = Answer(response, server)
        if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return last_answer
        if attempt >= 2 * len(allowed):
            break  # every server said no, twice: that is the answer
    if last_answer is not None:
        return last_answer
    only_unreachable = len(unreachable) == len(allowed) and not timed_out
    raise DnsFailure(Reason.DNS_ERROR if only_unreachable else Reason.DNS_TIMEOUT, last_error)


def failure_for_rcode(answer: Answer, name: str) -> DnsFailure | None:
    """The failure an rcode means, or None for NOERROR."""
    reason = RCODE_REASONS.get(answer.response.rcode())
    if reason is None and answer.response.rcode() != dns.rcode.NOERROR:
        reason = Reason.DNS_ERROR
    if reason is None:
        return None
    return DnsFailure(reason, f"{answer.server} answered {answer.rcode} for {name}", answer.rcode)


def records(answer: Answer, rdtype: str | int) -> list[str]:
    """Texts of the answer records of that type, whatever owner (a CNAME chain ends there)."""
    wanted = dns.rdatatype.RdataType.make(rdtype)
    return [
        rd.to_text() for rrset in answer.response.answer if rrset.rdtype == wanted for rd in rrset
    ]


def cname_target(answer: Answer) -> str | None:
    for rrset in answer.response.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            return rrset[0].target.to_text()
    return None
