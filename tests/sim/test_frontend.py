"""The simulated Meta front ends, served over TLS on loopback and asked by a real aiohttp client.

A resolver in this file sends every hostname to 127.0.0.1 and the server's port, so a request
for https://graph.facebook.com/me connects to loopback with SNI and Host graph.facebook.com.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter.sim import frontend
from exporter.sim.certs import CertSpec, LabCA
from exporter.sim.frontend import (
    DEFAULT_HOSTS,
    MAX_WAIT,
    Fault,
    FaultError,
    FrontendServer,
    FrontendState,
    build_frontend_app,
    host_of,
    serve_frontend,
)
from tests.conftest import LoopbackResolver

LOOPBACK = "127.0.0.1"
NOT_META = "not-meta.test"
CONTROL = "https://sim-control.test/_sim"  # any host name reaches the control API
CERT_NAMES = [*DEFAULT_HOSTS, NOT_META, "sim-control.test", LOOPBACK]
ME_MESSAGE = "An active access token must be used to query information about the current user."


@pytest.fixture(scope="module")
def lab_ca() -> LabCA:
    return LabCA()


@pytest.fixture
def state() -> FrontendState:
    return FrontendState(control_enabled=True)


@pytest.fixture
async def server(lab_ca: LabCA, state: FrontendState) -> AsyncIterator[FrontendServer]:
    async with FrontendServer(state, lab_ca.server_ssl_context(CERT_NAMES)) as srv:
        yield srv


def client_for(lab_ca: LabCA, port: int, **timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=LoopbackResolver(port), ssl=lab_ca.client_ssl_context()
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(**{"total": 10.0, **timeout})
    )


@pytest.fixture
async def client(lab_ca: LabCA, server: FrontendServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with client_for(lab_ca, server.port) as session:
        yield session


async def wait_until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def set_fault(client: aiohttp.ClientSession, **fault: Any) -> None:
    async with client.put(f"{CONTROL}/faults", json=fault) as resp:
        assert resp.status == 200, await resp.text()


# --------------------------------------------------------------------------- healthy answers


async def test_graph_me_without_token(client: aiohttp.ClientSession, state: FrontendState) -> None:
    async with client.get("https://graph.facebook.com/me") as resp:
        assert resp.status == 400
        doc = await resp.json()
        headers = resp.headers
    error = doc["error"]
    assert {k: error[k] for k in ("message", "type", "code")} == {
        "message": ME_MESSAGE,
        "type": "OAuthException",
        "code": 2500,
    }
    assert error["fbtrace_id"] and isinstance(error["fbtrace_id"], str)
    assert headers["WWW-Authenticate"] == (
        f'OAuth "Facebook Platform" "invalid_request" "{ME_MESSAGE}"'
    )
    assert headers["x-fb-request-id"]
    assert headers["x-fb-trace-id"] == error["fbtrace_id"]
    assert headers["Alt-Svc"] == 'h3=":443"; ma=86400'
    assert headers["Content-Type"].startswith("application/json")
    assert state.requests == {"graph.facebook.com": 1}


async def test_trace_ids_differ_per_request(client: aiohttp.ClientSession) -> None:
    ids = set()
    for _ in range(3):
        async with client.get("https://graph.facebook.com/me") as resp:
            ids.add((await resp.json())["error"]["fbtrace_id"])
    assert len(ids) == 3


async def test_versioned_graph_path(client: aiohttp.ClientSession) -> None:
    async with client.get("https://graph.facebook.com/v19.0/me") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == 2500
        assert resp.headers["facebook-api-version"] == "v19.0"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://graph.facebook.com/me?access_token=bad", 190),
        ("https://graph.facebook.com/v21.0/me?access_token=bad", 190),
        ("https://graph.facebook.com/v21.0/12345?fields=health_status", 104),
        ("https://graph.instagram.com/me", 190),
        ("https://graph.instagram.com/me?access_token=bad", 190),
    ],
)
async def test_graph_errors(client: aiohttp.ClientSession, url: str, code: int) -> None:
    async with client.get(url) as resp:
        assert resp.status == 400
        doc = await resp.json()
        assert resp.headers["WWW-Authenticate"].startswith('OAuth "Facebook Platform" "invalid_')
    assert doc["error"]["code"] == code
    assert doc["error"]["type"] == "OAuthException"


async def test_graph_with_a_valid_lab_token(
    client: aiohttp.ClientSession, state: FrontendState
) -> None:
    state.valid_tokens.add("lab-token")
    state.whatsapp_health = "LIMITED"
    headers = {"Authorization": "Bearer lab-token"}
    async with client.get("https://graph.facebook.com/v21.0/me", headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["name"] == "Lab User"
    url = "https://graph.facebook.com/v21.0/12345?fields=health_status&access_token=lab-token"
    async with client.get(url) as resp:
        assert resp.status == 200
        health = (await resp.json())["health_status"]
    assert health["can_send_message"] == "LIMITED"
    assert health["entities"][0]["id"] == "12345"


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("https://threads.net/@zuck?hl=en", "https://www.threads.com/@zuck?hl=en"),
        ("https://threads.net/", "https://www.threads.com/"),
        ("https://facebook.com/", "https://www.facebook.com/"),
    ],
)
async def test_permanent_redirects(client: aiohttp.ClientSession, url: str, location: str) -> None:
    async with client.get(url, allow_redirects=False) as resp:
        assert resp.status == 301
        assert resp.headers["Location"] == location


async def test_threads_redirect_lands_on_threads_com(
    client: aiohttp.ClientSession, state: FrontendState
) -> None:
    async with client.get("https://threads.net/") as resp:
        assert resp.status == 200
        assert str(resp.url) == "https://www.threads.com/"
        assert "<title>Threads</title>" in await resp.text()
        assert [r.status for r in resp.history] == [301]
    assert state.requests == {"threads.net": 1, "www.threads.com": 1}


PAGE_HOSTS = [name for name, spec in DEFAULT_HOSTS.items() if spec.kind == "page"]


@pytest.mark.parametrize("host", PAGE_HOSTS)
async def test_page_hosts_answer_html(client: aiohttp.ClientSession, host: str) -> None:
    async with client.get(f"https://{host}/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        text = await resp.text()
    assert f"<title>{DEFAULT_HOSTS[host].title}</title>" in text


async def test_unknown_path_is_404(client: aiohttp.ClientSession) -> None:
    async with client.get("https://www.instagram.com/no/such/page") as resp:
        assert resp.status == 404


async def test_login_page_has_the_form(client: aiohttp.ClientSession) -> None:
    async with client.get("https://www.facebook.com/login/") as resp:
        assert resp.status == 200
        assert '<form id="login_form"' in await resp.text()


async def test_ads_manager_redirects_to_login(client: aiohttp.ClientSession) -> None:
    async with client.get(
        "https://adsmanager.facebook.com/adsmanager/", allow_redirects=False
    ) as r:
        assert r.status == 302
        assert r.headers["Location"].startswith("https://www.facebook.com/login/?next=https%3A")
    async with client.get("https://adsmanager.facebook.com/") as resp:
        assert resp.status == 200
        assert resp.url.host == "www.facebook.com"
        assert '<form id="login_form"' in await resp.text()


async def test_unknown_host_is_misdirected(
    client: aiohttp.ClientSession, state: FrontendState
) -> None:
    async with client.get(f"https://{NOT_META}/") as resp:
        assert resp.status == 421
    assert state.requests[NOT_META] == 1


async def test_host_header_port_is_ignored(client: aiohttp.ClientSession) -> None:
    # The resolver sends any port to the server; the Host header keeps ":8443".
    async with client.get("https://graph.facebook.com:8443/me") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == 2500


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("graph.facebook.com", "graph.facebook.com"),
        ("Graph.Facebook.com:443", "graph.facebook.com"),
        ("www.facebook.com.", "www.facebook.com"),
        ("[::1]:8443", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("", ""),
    ],
)
def test_host_of(header: str, host: str) -> None:
    assert host_of(header) == host


# --------------------------------------------------------------------------- faults


async def test_status_fault_for_every_host(client: aiohttp.ClientSession) -> None:
    await set_fault(client, host="*", status=503)
    async with client.get("https://www.instagram.com/") as resp:
        assert resp.status == 503
        assert "Sorry, something went wrong" in await resp.text()
    async with client.get("https://graph.facebook.com/me") as resp:
        assert resp.status == 503
        error = (await resp.json())["error"]
    assert error["code"] == 2 and error["is_transient"] is True


async def test_status_fault_for_one_host(client: aiohttp.ClientSession) -> None:
    await set_fault(client, host="www.messenger.com", status=502)
    async with client.get("https://www.messenger.com/") as resp:
        assert resp.status == 502
    async with client.get("https://www.facebook.com/") as resp:
        assert resp.status == 200


async def test_own_host_fault_beats_wildcard(state: FrontendState) -> None:
    state.set_fault(Fault(host="*", status=503))
    state.set_fault(Fault(host="www.facebook.com", status=500))
    state.set_fault(Fault(host="www.facebook.com", path="/login/", status=502))
    assert state.fault_for("www.facebook.com", "/login/x").status == 502  # type: ignore[union-attr]
    assert state.fault_for("www.facebook.com", "/").status == 500  # type: ignore[union-attr]
    assert state.fault_for("m.facebook.com", "/").status == 503  # type: ignore[union-attr]
    state.clear_faults()
    assert state.fault_for("m.facebook.com", "/") is None


async def test_login_only_fault(client: aiohttp.ClientSession) -> None:
    # March 2024: network and pages fine, login broken.
    await set_fault(client, host="www.facebook.com", path="/login/", status=500)
    async with client.get("https://www.facebook.com/") as resp:
        assert resp.status == 200
    async with client.get("https://www.facebook.com/login/") as resp:
        assert resp.status == 500
    async with client.get("https://adsmanager.facebook.com/") as resp:
        assert resp.status == 500  # the redirect into login fails too
        assert resp.url.path == "/login/"


async def test_delay_before_headers(client: aiohttp.ClientSession) -> None:
    await set_fault(client, host="www.facebook.com", delay=0.3)
    started = time.monotonic()
    async with client.get("https://www.facebook.com/") as resp:
        assert resp.status == 200
    assert time.monotonic() - started >= 0.3


async def test_delay_ends_when_the_client_leaves(
    lab_ca: LabCA, server: FrontendServer, state: FrontendState
) -> None:
    state.set_fault(Fault(host="www.facebook.com", delay=60))
    async with client_for(lab_ca, server.port, total=0.3) as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.get("https://www.facebook.com/")
    await wait_until(lambda: state.in_flight == 0)


async def test_slow_body_after_quick_headers(
    lab_ca: LabCA, server: FrontendServer, state: FrontendState
) -> None:
    state.set_fault(Fault(host="graph.facebook.com", body_delay_per_chunk=5))
    async with (
        client_for(lab_ca, server.port, sock_read=0.3) as session,
        session.get("https://graph.facebook.com/me") as resp,
    ):
        assert resp.status == 400  # headers arrived
        with pytest.raises(asyncio.TimeoutError):
            await resp.read()
    await wait_until(lambda: state.in_flight == 0)


async def test_slow_body_completes_when_patient(client: aiohttp.ClientSession) -> None:
    await set_fault(client, host="www.whatsapp.com", body_delay_per_chunk=0.05)
    async with client.get("https://www.whatsapp.com/") as resp:
        assert resp.status == 200
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert (await resp.text()).rstrip().endswith("</html>")


async def test_oversize_body_is_streamed(client: aiohttp.ClientSession) -> None:
    size = 10 * 1024 * 1024
    await set_fault(client, host="static.xx.fbcdn.net", body_size=size)
    received = 0
    async with client.get("https://static.xx.fbcdn.net/") as resp:
        assert resp.status == 200
        assert "Content-Length" not in resp.headers  # the client must cap the read itself
        first = await resp.content.read(15)
        received = len(first)
        async for chunk in resp.content.iter_chunked(1 << 16):
            received += len(chunk)
    assert first == b"<!DOCTYPE html>"
    assert received == size


async def test_replaced_body(client: aiohttp.ClientSession) -> None:
    await set_fault(client, host="graph.facebook.com", body="<html>maintenance</html>")
    async with client.get("https://graph.facebook.com/me") as resp:
        assert resp.status == 400
        assert await resp.text() == "<html>maintenance</html>"
        with pytest.raises(aiohttp.ContentTypeError):
            await resp.json(content_type="text/html")


async def test_status_and_body_together(client: aiohttp.ClientSession) -> None:
    await set_fault(client, host="www.instagram.com", status=200, body="Sorry")
    async with client.get("https://www.instagram.com/") as resp:
        assert resp.status == 200
        assert await resp.text() == "Sorry"


async def test_redirect_to_itself(client: aiohttp.ClientSession) -> None:
    await set_fault(client, host="www.facebook.com", redirect_loop=True)
    with pytest.raises(aiohttp.TooManyRedirects):
        await client.get("https://www.facebook.com/")


async def test_redirect_loop_between_two_hosts(
    client: aiohttp.ClientSession, state: FrontendState
) -> None:
    await set_fault(client, host="www.facebook.com", redirect_to="https://m.facebook.com/")
    await set_fault(client, host="m.facebook.com", redirect_to="https://www.facebook.com/")
    with pytest.raises(aiohttp.TooManyRedirects):
        await client.get("https://www.facebook.com/", max_redirects=4)
    assert state.requests["www.facebook.com"] >= 2
    assert state.requests["m.facebook.com"] >= 2


async def test_hang_until_the_client_times_out(
    lab_ca: LabCA, server: FrontendServer, state: FrontendState
) -> None:
    async with client_for(lab_ca, server.port) as control:
        await set_fault(control, host="web.whatsapp.com", hang=True)  # alias of drop
    assert state.fault_for("web.whatsapp.com", "/") == Fault(host="web.whatsapp.com", drop=True)
    async with client_for(lab_ca, server.port, total=0.5) as session:
        request = asyncio.ensure_future(session.get("https://web.whatsapp.com/"))
        await wait_until(lambda: state.in_flight == 1)  # accepted, not answered
        with pytest.raises(asyncio.TimeoutError):
            await request
    await wait_until(lambda: state.in_flight == 0)  # the client left: the hang ended


async def test_hang_ends_without_handler_cancellation(lab_ca: LabCA) -> None:
    # Apps run by other runners (handler_cancellation off) must notice the client leaving too.
    state = FrontendState()
    state.set_fault(Fault(drop=True))
    runner = web.AppRunner(build_frontend_app(state), shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, 0)  # plain HTTP
        await site.start()
        async with client_for(lab_ca, site.port, total=0.3) as session:
            with pytest.raises(asyncio.TimeoutError):
                await session.get("http://www.facebook.com/")
        await wait_until(lambda: state.in_flight == 0, timeout=1.0)
    finally:
        await runner.cleanup()


async def test_hang_is_capped(
    client: aiohttp.ClientSession, state: FrontendState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "MAX_WAIT", 0.2)
    state.set_fault(Fault(host="www.facebook.com", drop=True))
    started = time.monotonic()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.get("https://www.facebook.com/")
    assert time.monotonic() - started < 2


async def test_close_without_answer(client: aiohttp.ClientSession, state: FrontendState) -> None:
    state.set_fault(Fault(host="i.instagram.com", close=True))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.get("https://i.instagram.com/")


async def test_shutdown_ends_hanging_requests(lab_ca: LabCA) -> None:
    state = FrontendState()
    state.set_fault(Fault(drop=True))
    runner, port = await serve_frontend(state, lab_ca.server_ssl_context(CERT_NAMES))
    async with client_for(lab_ca, port) as session:
        request = asyncio.ensure_future(session.get("https://www.facebook.com/"))
        await wait_until(lambda: state.in_flight == 1)
        started = time.monotonic()
        await runner.cleanup()
        assert time.monotonic() - started < 1.5
        # Disconnected, or refused when aiohttp retries the idempotent GET.
        with pytest.raises(aiohttp.ClientError):
            await request
    assert state.in_flight == 0


# --------------------------------------------------------------------------- control API


async def test_control_api_round_trip(client: aiohttp.ClientSession, state: FrontendState) -> None:
    faults = [
        {"host": "*", "status": 503},
        {"host": "www.facebook.com", "path": "/login/", "status": 500, "delay": 2.5},
    ]
    async with client.post(f"{CONTROL}/faults", json=faults) as resp:
        assert resp.status == 200
    async with client.get(f"{CONTROL}/faults") as resp:
        listed = (await resp.json())["faults"]
    assert [(f["host"], f["path"], f["status"]) for f in listed] == [
        ("*", None, 503),
        ("www.facebook.com", "/login/", 500),
    ]
    assert listed[1]["delay"] == 2.5
    params = {"host": "www.facebook.com", "path": "/login/"}
    async with client.delete(f"{CONTROL}/faults", params=params) as resp:
        assert (await resp.json()) == {"cleared": 1}
    assert list(state.faults) == [("*", None)]
    async with client.delete(f"{CONTROL}/faults") as resp:
        assert (await resp.json()) == {"cleared": 1}
    assert state.faults == {}
    assert state.requests == {}  # control requests are not counted


async def test_control_api_request_counts(client: aiohttp.ClientSession) -> None:
    async with client.get("https://www.instagram.com/"):
        pass
    async with client.get(f"{CONTROL}/requests") as resp:
        doc = await resp.json()
    assert doc["hosts"] == {"www.instagram.com": 1}
    assert doc["paths"] == [{"host": "www.instagram.com", "path": "/", "count": 1}]
    async with client.delete(f"{CONTROL}/requests") as resp:
        assert resp.status == 200
    async with client.get(f"{CONTROL}/requests") as resp:
        assert (await resp.json())["hosts"] == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"host": "*", "status": 700}, "status"),
        ({"host": "*", "delay": MAX_WAIT + 1}, "delay"),
        ({"host": "*", "delay": -1}, "delay"),
        ({"host": "*", "status": True}, "status"),
        ({"host": "*", "colour": "red"}, "unknown fault fields: colour"),
        ([{"host": "*", "status": 503}, {"host": ""}], "host"),
        ("not a fault", "JSON object"),
    ],
)
async def test_control_api_rejects_bad_faults(
    client: aiohttp.ClientSession, state: FrontendState, body: Any, message: str
) -> None:
    async with client.put(f"{CONTROL}/faults", json=body) as resp:
        assert resp.status == 400
        assert message in (await resp.json())["error"]
    assert state.faults == {}  # all or nothing


async def test_control_api_rejects_bad_json(client: aiohttp.ClientSession) -> None:
    async with client.put(f"{CONTROL}/faults", data=b"{oops") as resp:
        assert resp.status == 400


async def test_control_api_unknown_endpoint_and_method(client: aiohttp.ClientSession) -> None:
    async with client.get(f"{CONTROL}/nothing") as resp:
        assert resp.status == 404
    async with client.patch(f"{CONTROL}/faults") as resp:
        assert resp.status == 405


async def test_control_api_off_by_default(
    client: aiohttp.ClientSession, state: FrontendState
) -> None:
    state.control_enabled = False
    async with client.put("https://www.facebook.com/_sim/faults", json={"status": 503}) as resp:
        assert resp.status == 404  # an ordinary unknown page
    assert state.faults == {}
    assert FrontendState().control_enabled is False


def test_fault_validation_in_python() -> None:
    with pytest.raises(FaultError, match="delay"):
        Fault(delay=MAX_WAIT * 2)
    with pytest.raises(FaultError, match="body_size"):
        Fault(body_size=-1)
    with pytest.raises(FaultError, match="redirect_to"):
        Fault(redirect_to="ftp://x")
    assert Fault(host="WWW.Facebook.COM.").host == "www.facebook.com"
    assert Fault.from_json(Fault(status=503).to_json()) == Fault(status=503)


# --------------------------------------------------------------------------- certificates


SNI_SPECS = {
    "www.facebook.com": CertSpec.valid(),
    "graph.facebook.com": CertSpec.expired(),
    "www.instagram.com": CertSpec.unknown_ca(),
    "m.facebook.com": CertSpec.wrong_host(),
}


@pytest.fixture
async def sni_server(lab_ca: LabCA, state: FrontendState) -> AsyncIterator[FrontendServer]:
    sni = lab_ca.sni_server(SNI_SPECS)
    async with FrontendServer(state, sni.ssl_context) as srv:
        yield srv


async def test_sni_server_valid_name(lab_ca: LabCA, sni_server: FrontendServer) -> None:
    async with (
        client_for(lab_ca, sni_server.port) as session,
        session.get("https://www.facebook.com/") as resp,
    ):
        assert resp.status == 200


@pytest.mark.parametrize(
    ("host", "code", "text"),
    [
        ("graph.facebook.com", 10, "certificate has expired"),
        ("www.instagram.com", 20, "unable to get local issuer certificate"),
        ("m.facebook.com", 62, "Hostname mismatch"),
        (NOT_META, 62, "Hostname mismatch"),  # default leaf (127.0.0.1) for unknown SNI
    ],
)
async def test_bad_certificates_fail_verification(
    lab_ca: LabCA,
    sni_server: FrontendServer,
    state: FrontendState,
    host: str,
    code: int,
    text: str,
) -> None:
    async with client_for(lab_ca, sni_server.port) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await session.get(f"https://{host}/")
    err = info.value.certificate_error
    assert getattr(err, "verify_code", None) == code
    assert text in str(err)
    assert state.requests == {}  # no HTTP request got through
