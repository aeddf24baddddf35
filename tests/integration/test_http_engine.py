"""The libcurl engine under the HTTP prober: versions, pinning, egress, fresh connections,
callbacks that fail. Real sockets on loopback: the simulated front end (HTTP/1.1), and the
simulated edge (hypercorn: HTTP/2 over TLS, HTTP/3 over QUIC) forwarding to it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exporter.egress import EgressPolicy, PolicyViolation
from exporter.model import Layer, Phase, Reason
from exporter.probes import ProbeEnv, curl, run_probe
from exporter.probes.base import ProbeRun
from exporter.probes.http import HttpParams
from exporter.sim.certs import LabCA, SniCertificates
from exporter.sim.edge import EdgeServer, _bound_pair
from exporter.sim.frontend import Fault, FrontendServer, FrontendState, HostSpec
from tests.conftest import LOOPBACK_POLICY, assert_outcome, closed_port, make_check
from tests.integration.test_tcp_tls_probe import Handler, serving

WWW = "www.facebook.com"
EDGE_NAMES = ["*.facebook.com", "facebook.com", "www.instagram.com"]


@pytest.fixture
async def edge(lab_ca: LabCA, frontend: FrontendServer) -> AsyncIterator[EdgeServer]:
    async with EdgeServer(lab_ca, EDGE_NAMES, "127.0.0.1", frontend.port) as server:
        yield server


def check_at(port: int, version: str | None = None, **params: object):  # type: ignore[no-untyped-def]
    if version is not None:
        params["http_version"] = version
    return make_check("http", url=f"https://{WWW}:{port}/", **params)


@pytest.mark.parametrize(("asked", "used"), [("1.1", "1.1"), ("2", "2"), ("3", "3")])
async def test_each_version_is_spoken_and_reported(
    asked: str, used: str, edge: EdgeServer, frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    result = await run_probe(check_at(edge.port, asked), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.http_version == used
    assert result.detail.startswith(f"HTTP/{used} 200")
    assert set(result.phases) == set(Phase), dict(result.phases)
    assert all(seconds > 0 for seconds in result.phases.values()), dict(result.phases)
    assert result.tls_version == "TLSv1.3"
    assert result.tls_expiry is not None
    assert frontend.state.requests[WWW] == 1  # the edge forwarded it to the front end


async def test_http2_falls_back_to_1_1_where_the_server_has_no_h2(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    """The default offers h2 and http/1.1 by ALPN, as browsers do; the front end takes 1.1."""
    result = await run_probe(check_at(frontend.port), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.http_version == "1.1"


async def test_faults_read_the_same_over_http3(
    edge: EdgeServer, frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    frontend.state.set_fault(Fault(host=WWW, status=503))
    result = await run_probe(check_at(edge.port, "3"), probe_env)
    assert_outcome(result, Reason.HTTP_STATUS, Layer.HTTP)
    assert (result.http_status, result.http_version) == (503, "3")
    frontend.state.clear_faults()
    frontend.state.set_fault(Fault(host=WWW, body_size=300_000))
    result = await run_probe(check_at(edge.port, "3", max_body_bytes=100_000), probe_env)
    assert_outcome(result, Reason.BODY_TOO_LARGE, Layer.CONTENT)


async def test_no_quic_listener_is_quic_refused(probe_env: ProbeEnv) -> None:
    """ICMP port unreachable: nothing listens on that UDP port. Instant, never a timeout."""
    port = closed_port(kind=socket.SOCK_DGRAM)
    result = await run_probe(check_at(port, "3", timeout=2.0), probe_env)
    assert_outcome(result, Reason.QUIC_REFUSED, Layer.QUIC)
    assert result.duration < 1.0
    assert Phase.CONNECT in result.phases


async def test_silent_udp_is_quic_timeout_during_connect(probe_env: ProbeEnv) -> None:
    """A bound UDP port that never answers: the QUIC handshake waits out the deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        result = await run_probe(check_at(silent.getsockname()[1], "3", timeout=0.6), probe_env)
    assert_outcome(result, Reason.QUIC_TIMEOUT, Layer.QUIC)
    assert "during connect" in result.detail
    assert result.duration < 0.6 + 0.5


async def test_a_slow_quic_path_is_connect_time(edge: EdgeServer, probe_env: ProbeEnv) -> None:
    edge.quic_delay = 0.15
    result = await run_probe(check_at(edge.port, "3", timeout=5.0), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    # The QUIC handshake is a round trip at least: every datagram in waits 0.15 s.
    assert result.phases[Phase.CONNECT] >= 0.15, dict(result.phases)


async def test_every_probe_is_a_fresh_connection_and_full_handshake(
    edge: EdgeServer, frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    for version in ("2", "3", "2", "3"):
        result = await run_probe(check_at(edge.port, version), probe_env)
        assert_outcome(result, Reason.OK, Layer.NONE)
        assert result.phases[Phase.CONNECT] > 0 and result.phases[Phase.TLS] > 0
        assert result.tls_expiry is not None  # a resumed session has no certificate
    result = await run_probe(check_at(frontend.port), probe_env)
    assert result.phases[Phase.TLS] > 0 and result.tls_expiry is not None


async def test_the_address_is_pinned_per_probe(
    lab_ca: LabCA, certificates: SniCertificates, probe_env: ProbeEnv
) -> None:
    """Two probes at once, same URL, each pinned to its own address (resolve_to): each
    reaches its own server. One shared DNS cache would send both to one."""
    first, second = FrontendState(), FrontendState()
    async with (
        FrontendServer(first, certificates.ssl_context, "127.0.0.1") as one,
        FrontendServer(second, certificates.ssl_context, "127.0.0.2", one.port) as two,
    ):
        assert two.port == one.port
        checks = [
            check_at(one.port, resolve_to=(address,)) for address in ("127.0.0.1", "127.0.0.2")
        ]
        for _ in range(3):
            results = await asyncio.gather(*(run_probe(c, probe_env) for c in checks))
            assert all(r.success for r in results), [r.detail for r in results]
        assert (first.requests[WWW], second.requests[WWW]) == (3, 3)


class _FlippingPolicy:
    """Permits any address the first `allowed` times it is asked, then refuses: shows which
    of libcurl's two checkpoints refused."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked = 0

    def require(self, address: str, what: str) -> None:
        self.asked += 1
        if self.asked > self.allowed:
            raise PolicyViolation(address, what)


def _request(port: int, version: str, ca_file: Path) -> curl.Request:
    return curl.Request(
        url=f"https://{WWW}:{port}/",
        host=WWW,
        port=port,
        address="127.0.0.1",
        http_version=version,
        ca_file=str(ca_file),
    )


@pytest.mark.parametrize("version", ["2", "3"])
@pytest.mark.parametrize(("allowed", "checkpoint"), [(0, "socket"), (1, "request")])
async def test_the_egress_policy_holds_where_libcurl_opens_sockets_and_sends(
    version: str,
    allowed: int,
    checkpoint: str,
    edge: EdgeServer,
    frontend: FrontendServer,
    ca_file: Path,
) -> None:
    """TCP and UDP alike: refused at the socket (no packet), or before the request (the
    handshake happened, the request never went out)."""
    policy = _FlippingPolicy(allowed)
    run = ProbeRun(deadline=asyncio.get_running_loop().time() + 5)
    with pytest.raises(PolicyViolation):
        await curl.exchange(_request(edge.port, version, ca_file), policy, run)  # type: ignore[arg-type]
    assert policy.asked == allowed + 1
    assert frontend.state.requests[WWW] == 0
    if checkpoint == "request":
        assert Phase.TLS in run.clock.totals  # connected and handshaken, then refused


async def test_an_address_outside_the_policy_is_blocked_before_any_socket(
    frontend: FrontendServer, probe_env: ProbeEnv, ca_file: Path
) -> None:
    policy = EgressPolicy.from_strings(["::1/128"])
    env = ProbeEnv(probe_env.resolver, policy, str(ca_file))
    result = await run_probe(check_at(frontend.port, resolve_to=("127.0.0.1",)), env)
    assert_outcome(result, Reason.BLOCKED_BY_POLICY, Layer.NONE)
    assert frontend.state.requests[WWW] == 0


@pytest.mark.parametrize("callback", ["open_socket", "header", "write", "debug"])
async def test_an_exception_in_a_callback_ends_the_probe_as_internal_error(
    callback: str,
    frontend: FrontendServer,
    probe_env: ProbeEnv,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: object, *args: object) -> None:
        raise RuntimeError(f"{callback} broke")

    monkeypatch.setattr(curl._Transfer, callback, curl._guarded(_ABORTS[callback])(broken))
    result = await run_probe(check_at(frontend.port, timeout=3.0), probe_env)
    assert_outcome(result, Reason.INTERNAL_ERROR, Layer.NONE)
    assert result.duration < 1.0  # aborted at once, not at the deadline
    assert "RuntimeError" in result.detail


_ABORTS = {"open_socket": -1, "header": -1, "write": 0, "debug": None}


async def test_proxy_settings_in_the_environment_are_ignored(
    frontend: FrontendServer, probe_env: ProbeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("http_proxy", "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    result = await run_probe(check_at(frontend.port), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)


@pytest.mark.parametrize("how", ["bearer_token_env", "headers"])
async def test_a_redirect_to_another_origin_does_not_carry_credentials(
    how: str, frontend: FrontendServer, probe_env: ProbeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """facebook.com/me -> graph.facebook.com/me with a token Graph accepts: Graph answers
    400 OAuthException, so the token stayed with the check's own origin, whether it came
    from bearer_token_env or from the check's own Authorization header."""
    token = "lab-token-0b5e"
    monkeypatch.setenv("META_EXPORTER_TEST_TOKEN", token)
    frontend.state.valid_tokens.add(token)
    location = f"https://graph.facebook.com:{frontend.port}"
    frontend.state.hosts["facebook.com"] = HostSpec("redirect", location=location)
    credentials: dict[str, object] = (
        {"bearer_token_env": "META_EXPORTER_TEST_TOKEN"}
        if how == "bearer_token_env"
        else {"headers": {"Authorization": f"Bearer {token}"}}
    )
    check = make_check(
        "http",
        url=f"https://facebook.com:{frontend.port}/me",
        valid_status_codes=[400],
        json_expect={"error.type": "OAuthException"},
        **credentials,
    )
    result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert "1 redirects" in result.detail


@pytest.mark.parametrize(
    ("url", "version", "problem"),
    [
        ("http://www.facebook.com/", "3", "HTTP/3 needs an https:// URL"),
        ("https://www.facebook.com/", "4", "'4' is not one of '1.1', '2', '3'"),
    ],
)
def test_http_version_is_validated(url: str, version: str, problem: str) -> None:
    problems = HttpParams(url=url, http_version=version).check()  # type: ignore[arg-type]
    assert [p for p in problems if p[0] == "http_version" and problem in p[1]], problems


def test_loopback_policy_is_the_tests_own() -> None:
    assert LOOPBACK_POLICY.permits("127.0.0.1") and not LOOPBACK_POLICY.permits("157.240.1.1")


async def test_without_a_ca_file_the_system_trust_store_is_used(
    frontend: FrontendServer,
    dns_server: object,
    probe_env: ProbeEnv,
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As Python's ssl finds it (SSL_CERT_FILE here), not the path libcurl's build chose."""
    env = ProbeEnv(probe_env.resolver, LOOPBACK_POLICY, None)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    curl.system_trust.cache_clear()
    try:
        result = await run_probe(check_at(frontend.port), env)
        assert_outcome(result, Reason.OK, Layer.NONE)
        monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/bundle.pem")
        monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")
        curl.system_trust.cache_clear()
        result = await run_probe(check_at(frontend.port), env)
        assert result.layer is Layer.TLS, result.detail  # the lab CA is not trusted then
    finally:
        curl.system_trust.cache_clear()


def _answering(answer: bytes) -> Handler:
    """A plain-HTTP server's handler: reads the request, sends `answer` whole, hangs up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    return handler


async def test_a_redirect_to_a_non_http_target_is_a_protocol_failure(probe_env: ProbeEnv) -> None:
    app_link = b"HTTP/1.1 302 Found\r\nLocation: fb://profile/4\r\nContent-Length: 0\r\n\r\n"
    async with serving(_answering(app_link)) as port:
        check = make_check("http", url=f"http://{WWW}:{port}/")
        result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.HTTP_PROTOCOL, Layer.HTTP)
    assert "fb:" in result.detail


async def test_a_host_name_in_unicode_is_still_pinned(probe_env: ProbeEnv) -> None:
    """libcurl matches CONNECT_TO against the name's IDNA spelling: an entry naming the host
    as written would not match, and libcurl would ask the system's resolver. Here that
    resolver knows no such name: success means the pin held."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with serving(_answering(ok)) as port:
        check = make_check("http", url=f"http://bücher.invalid:{port}/", resolve_to=("127.0.0.1",))
        result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)


async def test_a_refused_address_hands_over_to_the_next_without_double_counting(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    """127.0.0.2 refuses (nothing listens there), 127.0.0.1 answers: the probe succeeds and
    its phases add up to no more than its duration."""
    check = check_at(frontend.port, resolve_to=("127.0.0.2", "127.0.0.1"))
    result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert sum(result.phases.values()) <= result.duration, dict(result.phases)


async def test_a_failing_status_is_judged_before_its_body(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    """A 503 with a body over the cap is http_status (the body is never read), as before."""
    frontend.state.set_fault(Fault(host=WWW, status=503, body_size=300_000))
    result = await run_probe(check_at(frontend.port, max_body_bytes=100_000), probe_env)
    assert_outcome(result, Reason.HTTP_STATUS, Layer.HTTP)


async def test_a_ca_bundle_gone_at_probe_time_is_our_error_not_metas(
    frontend: FrontendServer, probe_env: ProbeEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = ProbeEnv(probe_env.resolver, LOOPBACK_POLICY, str(tmp_path / "deleted.pem"))
    result = await run_probe(check_at(frontend.port), env)
    assert_outcome(result, Reason.INTERNAL_ERROR, Layer.NONE)
    assert not result.measured
    assert frontend.state.requests[WWW] == 0


async def test_http3_clients_that_give_up_cost_the_edge_only_their_streams(
    edge: EdgeServer, frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    """Probes that reach their deadline mid-answer reset their streams; the edge's QUIC
    listener must go on serving (hypercorn's own HTTP/3 let the reset kill it, and every
    later handshake timed out: Meta read "degraded at quic" for the rest of a lab run)."""
    frontend.state.set_fault(Fault(host=WWW, delay=0.4))
    gave_up = await asyncio.gather(
        *(run_probe(check_at(edge.port, "3", timeout=0.2), probe_env) for _ in range(4))
    )
    assert {r.reason for r in gave_up} == {Reason.HTTP_TIMEOUT}, [r.detail for r in gave_up]
    await asyncio.sleep(0.4)  # the front end answers now, into streams nobody reads
    frontend.state.clear_faults()
    result = await run_probe(check_at(edge.port, "3", timeout=2.0), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)


async def test_the_edges_connections_send_small_writes_at_once() -> None:
    """The edge's TCP listener is made as asyncio needs it to set TCP_NODELAY on each
    connection (as real edges do): without it, Nagle held every HTTP/1.1 body until the
    client's delayed ACK, 40 ms after its headers."""
    tcp, udp = _bound_pair("127.0.0.1", 0)
    udp.close()
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=tcp)
    try:
        _, writer = await asyncio.open_connection(*tcp.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 5) == 1
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
