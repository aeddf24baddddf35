"""The HTTP prober against the simulated Meta front ends on 127.0.0.1, over real TLS.

URLs name the real hosts (https://www.facebook.com:<port>/): the fake DNS resolves them to
loopback, and the front end picks its certificate by SNI and its answer by Host. Faults
are set on the front end's state. Every case asserts the reason, the layer and success.
"""

from __future__ import annotations

import pytest

from exporter.egress import EgressPolicy
from exporter.model import Layer, Phase, Reason
from exporter.net.resolver import Resolver
from exporter.probes import ProbeEnv, run_probe
from exporter.sim.certs import CertSpec, SniCertificates
from exporter.sim.dnsserver import DnsServer
from exporter.sim.frontend import LAB_USER_ID, Fault, FrontendServer, HostSpec
from exporter.spec import CheckSpec, Endpoint
from tests.conftest import assert_outcome, closed_port, make_check

SLACK = 0.5  # event loop and CI headroom on top of a check's timeout
WWW = "www.facebook.com"
GRAPH = "graph.facebook.com"
TOKEN_ENV = "META_EXPORTER_TEST_GRAPH_TOKEN"


def url(frontend: FrontendServer, host: str = WWW, path: str = "/") -> str:
    return f"https://{host}:{frontend.port}{path}"


def http_check(frontend: FrontendServer, host: str = WWW, path: str = "/", **params) -> CheckSpec:
    return make_check("http", url=url(frontend, host, path), **params)


async def test_ok_times_all_five_phases(frontend: FrontendServer, probe_env: ProbeEnv) -> None:
    """200 with every phase measured.

    This guards the private aiohttp hook (TCPConnector._wrap_create_connection) that
    _PhaseTimingConnector overrides to time connect and tls apart: if an aiohttp release
    renames or reshapes it, connect/tls go missing here (or the probe fails) first.
    """
    result = await run_probe(http_check(frontend), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.http_status == 200
    assert set(result.phases) == set(Phase)
    assert all(seconds > 0 for seconds in result.phases.values()), dict(result.phases)
    assert result.tls_version == "TLSv1.3"
    assert result.tls_expiry is not None
    assert result.address_family == "ipv4"
    assert frontend.state.requests[WWW] == 1


async def test_head_method(frontend: FrontendServer, probe_env: ProbeEnv) -> None:
    result = await run_probe(http_check(frontend, method="HEAD"), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.http_status == 200
    assert frontend.state.requests[WWW] == 1


@pytest.mark.parametrize(
    ("json_expect", "reason"),
    [
        ({"error.type": "OAuthException", "error.code": 2500}, Reason.OK),
        ({"error.type": "OAuthException", "error.code": 190}, Reason.CONTENT_MISMATCH),
        ({"error.no_such_key": 1}, Reason.CONTENT_MISMATCH),
    ],
)
async def test_graph_me_without_token(
    json_expect: dict, reason: Reason, frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    """Graph API up means /me answers 400 OAuthException to a caller with no token."""
    check = http_check(frontend, GRAPH, "/me", valid_status_codes=[400], json_expect=json_expect)
    result = await run_probe(check, probe_env)
    assert_outcome(result, reason, Layer.NONE if reason is Reason.OK else Layer.CONTENT)
    assert result.http_status == 400


# (id, fault for www.facebook.com, extra check params, reason, layer)
FAULT_CASES = [
    ("status-503", Fault(host=WWW, status=503), {}, Reason.HTTP_STATUS, Layer.HTTP),
    ("body-regex", None, {"body_regex": "Sorry, something went wrong"},
     Reason.CONTENT_MISMATCH, Layer.CONTENT),
    ("body-not-regex", Fault(host=WWW, body="<h1>Sorry, something went wrong.</h1>"),
     {"body_not_regex": "Sorry, something went wrong"}, Reason.CONTENT_MISMATCH, Layer.CONTENT),
    ("body-not-regex-ok", None, {"body_not_regex": "Sorry, something went wrong"},
     Reason.OK, Layer.NONE),
    ("body-too-large", Fault(host=WWW, body_size=300_000), {"max_body_bytes": 100_000},
     Reason.BODY_TOO_LARGE, Layer.CONTENT),
    ("body-within-cap", Fault(host=WWW, body_size=90_000), {"max_body_bytes": 100_000},
     Reason.OK, Layer.NONE),
    ("redirect-loop", Fault(host=WWW, redirect_loop=True), {}, Reason.HTTP_REDIRECT_LOOP,
     Layer.HTTP),
    ("server-closes", Fault(host=WWW, close=True), {}, Reason.HTTP_PROTOCOL, Layer.HTTP),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "params", "reason", "layer"),
    [pytest.param(*case[1:], id=case[0]) for case in FAULT_CASES],
)
async def test_faults(
    fault: Fault | None,
    params: dict,
    reason: Reason,
    layer: Layer,
    frontend: FrontendServer,
    probe_env: ProbeEnv,
) -> None:
    if fault is not None:
        frontend.state.set_fault(fault)
    result = await run_probe(http_check(frontend, **params), probe_env)
    assert_outcome(result, reason, layer)
    assert frontend.state.requests[WWW] >= 1


async def test_status_fact_on_http_status_failure(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    frontend.state.set_fault(Fault(host=WWW, status=503))
    result = await run_probe(http_check(frontend), probe_env)
    assert_outcome(result, Reason.HTTP_STATUS, Layer.HTTP)
    assert result.http_status == 503
    assert "503" in result.detail


@pytest.mark.parametrize(("max_redirects", "requests"), [(0, 1), (1, 2), (3, 4)])
async def test_redirect_loop_follows_max_redirects_then_stops(
    max_redirects: int, requests: int, frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    """max_redirects: N follows N redirects; 0 follows none (aiohttp's 0 means endless)."""
    frontend.state.set_fault(Fault(host=WWW, redirect_loop=True))
    check = http_check(frontend, max_redirects=max_redirects)
    result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.HTTP_REDIRECT_LOOP, Layer.HTTP)
    assert frontend.state.requests[WWW] == requests  # the first request and N redirects


@pytest.mark.parametrize(
    ("fault", "phase"),
    [
        pytest.param(Fault(host=WWW, delay=5.0), "processing", id="delay-before-headers"),
        pytest.param(Fault(host=WWW, drop=True), "processing", id="hang"),
        pytest.param(Fault(host=WWW, body_delay_per_chunk=5.0), "transfer", id="slow-body"),
    ],
)
async def test_timeouts(
    fault: Fault, phase: str, frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    frontend.state.set_fault(fault)
    timeout = 0.5
    result = await run_probe(http_check(frontend, timeout=timeout), probe_env)
    assert_outcome(result, Reason.HTTP_TIMEOUT, Layer.HTTP)
    assert result.duration < timeout + SLACK
    assert f"during {phase}" in result.detail


@pytest.mark.parametrize(
    ("max_redirects", "reason", "status", "followed"),
    [
        (5, Reason.OK, 200, 1),
        (1, Reason.OK, 200, 1),
        (0, Reason.HTTP_REDIRECT_LOOP, None, 0),  # no redirect allowed at all
    ],
)
async def test_redirects_are_followed(
    max_redirects: int,
    reason: Reason,
    status: int | None,
    followed: int,
    frontend: FrontendServer,
    probe_env: ProbeEnv,
) -> None:
    """facebook.com -> www.facebook.com (the sim's Location gets our port, not 443)."""
    location = f"https://{WWW}:{frontend.port}"
    frontend.state.hosts["facebook.com"] = HostSpec("redirect", location=location)
    check = http_check(frontend, "facebook.com", max_redirects=max_redirects)
    result = await run_probe(check, probe_env)
    assert_outcome(result, reason, Layer.NONE if reason is Reason.OK else Layer.HTTP)
    assert result.http_status == status
    assert ("1 redirects" in result.detail) == bool(followed)
    requests = frontend.state.requests
    assert (requests["facebook.com"], requests[WWW]) == (1, followed)


@pytest.mark.parametrize(
    ("header_regex", "reason", "layer"),
    [
        ({"Location": r"^https://www\.facebook\.com/$"}, Reason.OK, Layer.NONE),
        ({"Location": r"^https://m\.facebook\.com/"}, Reason.CONTENT_MISMATCH, Layer.CONTENT),
        ({"X-Not-Sent": "."}, Reason.CONTENT_MISMATCH, Layer.CONTENT),
    ],
)
async def test_redirect_not_followed(
    header_regex: dict,
    reason: Reason,
    layer: Layer,
    frontend: FrontendServer,
    probe_env: ProbeEnv,
) -> None:
    check = http_check(
        frontend,
        "facebook.com",
        follow_redirects=False,
        valid_status_codes=["3xx"],
        header_regex=header_regex,
    )
    result = await run_probe(check, probe_env)
    assert_outcome(result, reason, layer)
    assert result.http_status == 301
    assert frontend.state.requests[WWW] == 0


async def test_redirect_not_followed_fails_2xx_only(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    result = await run_probe(
        http_check(frontend, "facebook.com", follow_redirects=False), probe_env
    )
    assert_outcome(result, Reason.HTTP_STATUS, Layer.HTTP)
    assert result.http_status == 301


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(CertSpec.expired(), Reason.TLS_CERT_EXPIRED, id="expired"),
        pytest.param(CertSpec.unknown_ca(), Reason.TLS_CERT_INVALID, id="unknown-ca"),
        pytest.param(CertSpec.wrong_host(), Reason.TLS_HOSTNAME_MISMATCH, id="wrong-host"),
    ],
)
async def test_certificate_failures(
    spec: CertSpec,
    reason: Reason,
    frontend: FrontendServer,
    certificates: SniCertificates,
    probe_env: ProbeEnv,
) -> None:
    certificates.set(WWW, spec)
    result = await run_probe(http_check(frontend), probe_env)
    assert_outcome(result, reason, Layer.TLS)
    assert frontend.state.requests[WWW] == 0
    assert Phase.TLS in result.phases


@pytest.mark.parametrize(
    ("host", "fault", "reason"),
    [
        ("no-such-name.facebook.com", None, Reason.DNS_NXDOMAIN),
        (WWW, "nxdomain", Reason.DNS_NXDOMAIN),
        (WWW, "servfail", Reason.DNS_SERVFAIL),
    ],
)
async def test_dns_failures_read_as_in_the_dns_prober(
    host: str,
    fault: str | None,
    reason: Reason,
    frontend: FrontendServer,
    dns_server: DnsServer,
    probe_env: ProbeEnv,
) -> None:
    if fault:
        dns_server.set_fault("facebook.com", fault)
    result = await run_probe(http_check(frontend, host), probe_env)
    assert_outcome(result, reason, Layer.DNS)
    assert sum(frontend.state.requests.values()) == 0


async def test_dns_timeout(
    frontend: FrontendServer, dns_server: DnsServer, probe_env: ProbeEnv
) -> None:
    dns_server.set_fault("facebook.com", "timeout")
    timeout = 0.6
    result = await run_probe(http_check(frontend, timeout=timeout), probe_env)
    assert_outcome(result, Reason.DNS_TIMEOUT, Layer.DNS)
    assert result.duration < timeout + SLACK


async def test_connection_refused(probe_env: ProbeEnv) -> None:
    result = await run_probe(make_check("http", url=f"https://{WWW}:{closed_port()}/"), probe_env)
    assert_outcome(result, Reason.TCP_REFUSED, Layer.TCP)
    assert Phase.CONNECT in result.phases


async def test_resolve_to_override(
    frontend: FrontendServer, dns_server: DnsServer, probe_env: ProbeEnv
) -> None:
    """Like curl --resolve: DNS is not asked, SNI and Host still name the real host."""
    check = http_check(frontend, resolve_to=("127.0.0.1",))
    dns_server.set_fault("facebook.com", "servfail")  # would fail if DNS were asked
    result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert dns_server.queries == 0
    assert frontend.state.requests[WWW] == 1


@pytest.mark.parametrize(
    ("valid", "reason", "layer", "status"),
    [(True, Reason.OK, Layer.NONE, 200), (False, Reason.HTTP_STATUS, Layer.HTTP, 400)],
)
async def test_bearer_token_from_env(
    valid: bool,
    reason: Reason,
    layer: Layer,
    status: int,
    frontend: FrontendServer,
    probe_env: ProbeEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token is sent (the sim accepts it only if valid) and never shows in the detail."""
    token = "lab-token-7d1f0c"
    monkeypatch.setenv(TOKEN_ENV, token)
    if valid:
        frontend.state.valid_tokens.add(token)
    check = http_check(
        frontend, GRAPH, "/me", bearer_token_env=TOKEN_ENV, json_expect={"id": LAB_USER_ID}
    )
    result = await run_probe(check, probe_env)
    assert_outcome(result, reason, layer)
    assert result.http_status == status
    assert token not in result.detail


async def test_ip_literal_outside_egress_policy_is_blocked(
    frontend: FrontendServer, dns_server: DnsServer, ca_file: object
) -> None:
    """aiohttp never resolves an IP-literal URL: the policy must hold at connect."""
    policy = EgressPolicy.from_strings(["127.0.0.0/8", "::1/128"], deny=["127.0.0.0/8"])
    resolver = Resolver([Endpoint("::1", 53)], policy, attempt_timeout=0.5)
    env = ProbeEnv(resolver, policy, str(ca_file))
    check = make_check("http", url=f"https://127.0.0.1:{frontend.port}/")
    result = await run_probe(check, env)
    assert_outcome(result, Reason.BLOCKED_BY_POLICY, Layer.NONE)
    assert not result.measured
    assert sum(frontend.state.requests.values()) == 0
    assert dns_server.queries == 0


async def test_ip_literal_inside_policy_works(
    frontend: FrontendServer, probe_env: ProbeEnv
) -> None:
    """The fixture's certificates hold 127.0.0.1 as an IP SAN; the Host is the IP."""
    result = await run_probe(
        make_check("http", url=f"https://127.0.0.1:{frontend.port}/"), probe_env
    )
    # 127.0.0.1 is not one of the sim's hostnames: it answers 421 Misdirected Request.
    assert_outcome(result, Reason.HTTP_STATUS, Layer.HTTP)
    assert result.http_status == 421
