"""The DNS prober against a real DNS server on loopback, in both of its modes.

Recursive mode asks the configured resolvers: the fixture's DnsServer stands in for the
resolver (probe_env's resolver points at it). Authoritative mode asks listed nameservers
directly: the same server, named as "127.0.0.1:<port>". Every case asserts the reason,
the layer and the success flag, so a DNS failure reads the same whichever mode met it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import pytest

from exporter.egress import EgressPolicy
from exporter.model import Layer, Phase, Reason
from exporter.net.resolver import Resolver
from exporter.probes import ProbeEnv, run_probe
from exporter.sim import dnsserver
from exporter.sim.dnsserver import DnsServer
from exporter.spec import CheckSpec, Endpoint
from tests.conftest import closed_port, make_check, zones

MODES = ["recursive", "authoritative"]
# Slack for the event loop and a loaded CI machine on top of a check's timeout.
SLACK = 0.5


def dns_check(mode: str, server: DnsServer, *, timeout: float = 2.0, **params: Any) -> CheckSpec:
    if mode == "authoritative":
        params["nameservers"] = [f"127.0.0.1:{server.port}"]
    return make_check("dns", mode=mode, timeout=timeout, **params)


class _NonAuthoritative(asyncio.DatagramProtocol):
    """Answers from the fake zones but without the AA flag, like a caching resolver."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dnsserver.parse_query(data)
        response = query and dnsserver.answer(query, zones())
        if query is not None and response is not None:
            response.flags &= ~dns.flags.AA
            self.transport.sendto(dnsserver.render(response, query, tcp=False), addr)


@pytest.fixture
async def caching_server() -> AsyncIterator[int]:
    """Port of a UDP server on 127.0.0.1 that answers correctly but not authoritatively."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        _NonAuthoritative, local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


# (id, fault on facebook.com, params, expected reason, expected dns_rcode)
CASES = [
    ("ok", None, {"qname": "www.facebook.com"}, Reason.OK, "NOERROR"),
    ("nxdomain", None, {"qname": "no-such-name.facebook.com"}, Reason.DNS_NXDOMAIN, "NXDOMAIN"),
    ("servfail", "servfail", {"qname": "www.facebook.com"}, Reason.DNS_SERVFAIL, "SERVFAIL"),
    ("refused-outside-zones", None, {"qname": "www.example.org"}, Reason.DNS_REFUSED, "REFUSED"),
    ("nodata", None, {"qname": "v4only.facebook.com", "type": "AAAA"}, Reason.DNS_NO_ANSWER,
     "NOERROR"),
    ("answer-mismatch", None, {"qname": "www.facebook.com", "answer_regex": r"^157\.240\."},
     Reason.DNS_ANSWER_MISMATCH, "NOERROR"),
    ("answer-match", None, {"qname": "www.facebook.com", "answer_regex": r"^127\.0\.0\.1$"},
     Reason.OK, "NOERROR"),
]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("fault", "params", "reason", "rcode"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_answers(
    mode: str,
    fault: str | None,
    params: dict[str, Any],
    reason: Reason,
    rcode: str,
    dns_server: DnsServer,
    probe_env: ProbeEnv,
) -> None:
    if fault:
        dns_server.set_fault("facebook.com", fault)
    result = await run_probe(dns_check(mode, dns_server, **params), probe_env)
    assert (result.reason, result.layer, result.success) == (
        reason,
        Layer.NONE if reason is Reason.OK else Layer.DNS,
        reason is Reason.OK,
    ), result.detail
    assert result.dns_rcode == rcode
    assert dns_server.queries > 0
    assert Phase.RESOLVE in result.phases


@pytest.mark.parametrize("mode", MODES)
async def test_success_counts_answers_and_sees_aa(
    mode: str, dns_server: DnsServer, probe_env: ProbeEnv
) -> None:
    """A CNAME chain counts only the records of the asked type; the sim answers with AA."""
    check = dns_check(mode, dns_server, qname="www.facebook.com", require_authoritative=True)
    result = await run_probe(check, probe_env)
    assert (result.reason, result.layer, result.success) == (Reason.OK, Layer.NONE, True)
    assert result.dns_answers == 1
    assert result.dns_rcode == "NOERROR"
    assert dns_server.count("www.facebook.com", "A") >= 1


@pytest.mark.parametrize("mode", MODES)
async def test_timeout_within_check_timeout(
    mode: str, dns_server: DnsServer, probe_env: ProbeEnv
) -> None:
    dns_server.set_fault("facebook.com", "timeout")
    timeout = 0.6
    result = await run_probe(
        dns_check(mode, dns_server, qname="www.facebook.com", timeout=timeout), probe_env
    )
    assert (result.reason, result.layer, result.success) == (
        Reason.DNS_TIMEOUT,
        Layer.DNS,
        False,
    ), result.detail
    assert result.duration < timeout + SLACK
    assert dns_server.queries >= 1  # it did ask, and was met with silence


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("fault", "name", "answers"),
    [("truncate", "www.facebook.com", 1), ("huge", "facebook.com", dnsserver.HUGE_COUNT)],
)
async def test_truncated_udp_answer_falls_back_to_tcp(
    mode: str,
    fault: str,
    name: str,
    answers: int,
    dns_server: DnsServer,
    probe_env: ProbeEnv,
) -> None:
    """TC=1 over UDP (forced, or an answer too big for 512 bytes): the full answer via TCP."""
    dns_server.set_fault("facebook.com", fault)
    result = await run_probe(dns_check(mode, dns_server, qname=name), probe_env)
    assert (result.reason, result.layer, result.success) == (
        Reason.OK,
        Layer.NONE,
        True,
    ), result.detail
    assert result.dns_answers == answers
    assert dns_server.udp_queries >= 1 and dns_server.tcp_queries >= 1


async def test_transport_tcp_asks_over_tcp_only(dns_server: DnsServer, probe_env: ProbeEnv) -> None:
    check = dns_check("authoritative", dns_server, qname="www.facebook.com", transport="tcp")
    result = await run_probe(check, probe_env)
    assert (result.reason, result.layer, result.success) == (Reason.OK, Layer.NONE, True)
    assert (dns_server.udp_queries, dns_server.tcp_queries) == (0, 1)


async def test_authoritative_mode_refused_by_server_without_the_zone(
    dns_server: DnsServer, probe_env: ProbeEnv
) -> None:
    """A nameserver asked about a zone it does not serve is lame: it refuses."""
    check = dns_check("authoritative", dns_server, qname="www.instagram.com")
    dns_server.set_zones([z for z in zones() if z.origin.to_text() != "instagram.com."])
    result = await run_probe(check, probe_env)
    assert (result.reason, result.layer, result.success) == (
        Reason.DNS_REFUSED,
        Layer.DNS,
        False,
    )
    assert result.dns_rcode == "REFUSED"


@pytest.mark.parametrize(
    ("mode", "require_authoritative", "reason"),
    [
        ("authoritative", None, Reason.DNS_NOT_AUTHORITATIVE),  # required by default
        ("authoritative", False, Reason.OK),
        ("recursive", None, Reason.OK),  # resolvers answer from cache: AA not expected
        ("recursive", True, Reason.DNS_NOT_AUTHORITATIVE),
    ],
)
async def test_answer_without_aa_flag(
    mode: str,
    require_authoritative: bool | None,
    reason: Reason,
    caching_server: int,
    probe_env: ProbeEnv,
) -> None:
    params: dict[str, Any] = {"qname": "www.facebook.com", "mode": mode}
    if require_authoritative is not None:
        params["require_authoritative"] = require_authoritative
    if mode == "authoritative":
        params["nameservers"] = [f"127.0.0.1:{caching_server}"]
        env = probe_env
    else:
        server = [Endpoint("127.0.0.1", caching_server)]
        resolver = Resolver(server, probe_env.policy, attempt_timeout=0.5)
        env = ProbeEnv(resolver, probe_env.policy, probe_env.ca_file)
    result = await run_probe(make_check("dns", **params), env)
    assert (result.reason, result.layer, result.success) == (
        reason,
        Layer.NONE if reason is Reason.OK else Layer.DNS,
        reason is Reason.OK,
    ), result.detail
    assert result.dns_answers == 1


async def test_authoritative_mode_needs_every_nameserver(
    dns_server: DnsServer, caching_server: int, probe_env: ProbeEnv
) -> None:
    """One good nameserver does not hide a non-authoritative one."""
    check = make_check(
        "dns",
        qname="www.facebook.com",
        mode="authoritative",
        nameservers=[f"127.0.0.1:{dns_server.port}", f"127.0.0.1:{caching_server}"],
    )
    result = await run_probe(check, probe_env)
    assert (result.reason, result.layer, result.success) == (
        Reason.DNS_NOT_AUTHORITATIVE,
        Layer.DNS,
        False,
    )
    assert f"127.0.0.1:{caching_server}" in result.detail


@pytest.mark.parametrize("mode", MODES)
async def test_unreachable_server(mode: str, probe_env: ProbeEnv) -> None:
    """Nothing listens on the port: ICMP port unreachable comes back at once.

    A server that fails hard is not asked again, so the probe ends at once with
    dns_error naming the cause, instead of retrying until the deadline.
    """
    port = closed_port(kind=socket.SOCK_DGRAM)
    timeout = 0.6
    params: dict[str, Any] = {"qname": "www.facebook.com", "mode": mode, "timeout": timeout}
    if mode == "authoritative":
        params["nameservers"] = [f"127.0.0.1:{port}"]
        env = probe_env
    else:
        resolver = Resolver([Endpoint("127.0.0.1", port)], probe_env.policy, attempt_timeout=0.5)
        env = ProbeEnv(resolver, probe_env.policy, probe_env.ca_file)
    result = await run_probe(make_check("dns", **params), env)
    assert (result.reason, result.layer, result.success) == (
        Reason.DNS_ERROR,
        Layer.DNS,
        False,
    ), result.detail
    assert "unreachable" in result.detail
    assert result.duration < timeout / 2


@pytest.mark.parametrize("mode", MODES)
async def test_egress_policy_blocks_the_server_before_asking(
    mode: str, dns_server: DnsServer, ca_file: Any
) -> None:
    policy = EgressPolicy.from_strings(["::1/128"])  # the server is on 127.0.0.1
    resolver = Resolver([Endpoint("127.0.0.1", dns_server.port)], policy, attempt_timeout=0.5)
    env = ProbeEnv(resolver, policy, str(ca_file))
    result = await run_probe(dns_check(mode, dns_server, qname="www.facebook.com"), env)
    assert (result.reason, result.layer, result.success) == (
        Reason.BLOCKED_BY_POLICY,
        Layer.NONE,
        False,
    ), result.detail
    assert not result.measured
    assert "127.0.0.1" in result.detail
    assert dns_server.queries == 0
