"""The sim node: one spec, many simulated servers, steered over a UNIX socket — on loopback only.

Every listener binds 127.0.0.1 or 127.0.0.2 (Linux routes all of 127/8 to lo) with port 0; the
tests read the bound ports from GET /status, as the lab would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from exporter.model import Phase, Reason
from exporter.probes import ProbeEnv, run_probe
from exporter.sim.certs import LabCA
from exporter.sim.control import NodeError
from exporter.sim.node import SimNode
from exporter.sim.nodespec import NodeSpec, SpecError
from tests.conftest import LOOPBACK_POLICY, LoopbackResolver, make_check

LOOPBACK = "127.0.0.1"
LOOPBACK_2 = "127.0.0.2"
REPO = Path(__file__).resolve().parents[2]
WAIT = 10.0  # upper bound of every wait in this file
CHAT = "whatsapp-chat"

# OpenSSL X509_V_ERR_* codes.
CERT_HAS_EXPIRED = 10
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
HOSTNAME_MISMATCH = 62

SOA = "a.ns.facebook.com. dns.facebook.com. 1 7200 1800 604800 60"
ZONES = {
    "facebook.com": {
        "@": [["NS", 172800, "a.ns.facebook.com."], ["SOA", 3600, SOA], ["A", 60, LOOPBACK]],
        "www": [["CNAME", 300, "star-mini.c10r.facebook.com."]],
        "star-mini.c10r": [["A", 60, LOOPBACK]],
        "graph": [["A", 60, LOOPBACK]],
    },
    "instagram.com": {"www": [["A", 60, LOOPBACK]]},
}
HOSTNAMES = ["*.facebook.com", "facebook.com", "graph.facebook.com"]
ME_MESSAGE = "An active access token must be used to query information about the current user."


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short, under /tmp: a UNIX socket path must fit in 107 bytes, pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="simnode-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def spec_doc(workdir: Path, name: str = "node", **sections: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "control_socket": str(workdir / f"{name}.sock"),
        "ca_dir": str(workdir / "ca"),
        "dns": [{"listen": [f"{LOOPBACK}:0"], "zones": ZONES}],
        "https": [{"listen": [f"{LOOPBACK}:0"], "hostnames": HOSTNAMES}],
        "tcp": [
            {
                "listen": [f"{LOOPBACK_2}:0"],
                "name": CHAT,
                "max_connections": 2,
                "hold_seconds": WAIT,
            }
        ],
    }
    doc.update(sections)
    return doc


class Control:
    """The node's control API, spoken over its UNIX socket."""

    def __init__(self, path: Path) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(path)),
            timeout=aiohttp.ClientTimeout(total=WAIT),
        )

    async def call(
        self, method: str, path: str, body: Any = None, *, expect: int = 200, raw: str | None = None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.session.request(method, f"http://node{path}", **kwargs) as resp:
            doc: dict[str, Any] = await resp.json()
            assert resp.status == expect, doc
            return doc

    async def status(self) -> dict[str, Any]:
        return await self.call("GET", "/status")

    async def close(self) -> None:
        await self.session.close()


@contextlib.asynccontextmanager
async def running(doc: dict[str, Any]) -> AsyncIterator[tuple[SimNode, Control]]:
    async with SimNode(NodeSpec.from_json(doc)) as node:
        control = Control(node.spec.control_socket)
        try:
            yield node, control
        finally:
            await control.close()


@pytest.fixture
async def node(workdir: Path) -> AsyncIterator[tuple[SimNode, Control]]:
    async with running(spec_doc(workdir)) as pair:
        yield pair


def port_of(status: dict[str, Any], section: str, index: int = 0) -> int:
    port: int = status[section][index]["listen"][0]["port"]
    assert port > 0
    return port


async def ask_dns(
    port: int, name: str, rdtype: str = "A", timeout: float = 2.0
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(query, LOOPBACK, port=port, timeout=timeout)


async def https_get(port: int, ca_file: str, url: str) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=ca_file)
    connector = aiohttp.TCPConnector(resolver=LoopbackResolver(port), ssl=ctx, force_close=True)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.get(url, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text()


async def cert_error_code(port: int, ca_file: str, url: str) -> int | None:
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
        await https_get(port, ca_file, url)
    return getattr(info.value.certificate_error, "verify_code", None)


async def peer_not_after(port: int, ca_file: str, hostname: str) -> dt.datetime:
    ctx = ssl.create_default_context(cafile=ca_file)
    async with asyncio.timeout(WAIT):
        _, writer = await asyncio.open_connection(LOOPBACK, port, ssl=ctx, server_hostname=hostname)
        cert = writer.get_extra_info("peercert")
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.UTC)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def connect(port: int, host: str = LOOPBACK_2, timeout: float = 2.0) -> tuple[Any, Any]:
    return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(writer.wait_closed(), WAIT)


# --------------------------------------------------------------------------- the spec


def test_spec_of_the_lab_parses() -> None:
    # The lab's addresses are only parsed here, never bound.
    spec = NodeSpec.from_json(
        {
            "control_socket": "/run/lab/edge.sock",
            "ca_dir": "/run/lab/ca",
            "dns": [
                {
                    "listen": ["10.129.30.12:53", "[2001:db8::35]:53"],
                    "zones": {
                        "facebook.com": {
                            "@": [["NS", 172800, "a.ns.facebook.com."]],
                            "www": [["CNAME", 300, "star-mini.c10r.facebook.com."]],
                        }
                    },
                }
            ],
            "recursors": [
                {
                    "listen": ["10.1.1.53:53"],
                    "stubs": {"facebook.com": ["10.129.30.12:53"]},
                    "upstream_timeout": 0.5,
                }
            ],
            "https": [
                {
                    "listen": ["10.157.240.35:443"],
                    "hostnames": ["*.facebook.com", "facebook.com", "graph.facebook.com"],
                }
            ],
            "tcp": [{"listen": ["10.31.13.50:5222"], "name": "whatsapp-chat"}],
        }
    )
    assert [str(a) for a in spec.dns[0].listen] == ["10.129.30.12:53", "[2001:db8::35]:53"]
    assert spec.dns[0].zones[0].origin.to_text() == "facebook.com."
    assert dict(spec.recursors[0].stubs) == {"facebook.com": (("10.129.30.12", 53),)}
    assert spec.https[0].hostnames == ("*.facebook.com", "facebook.com", "graph.facebook.com")
    assert (spec.tcp[0].name, spec.tcp[0].max_connections, spec.tcp[0].hold_seconds) == (
        "whatsapp-chat",
        256,
        30.0,
    )


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.update(values)


BAD_SPECS = [
    (_without("control_socket"), "control_socket: is required"),
    (_without("ca_dir"), "ca_dir: is required"),
    (_set(dnss=[]), "dnss: unknown field"),
    (_set(control_socket="/tmp/" + "x" * 120), "control_socket: longer than 107 bytes"),
    (_set(dns={}), "dns: must be a JSON list"),
    (
        _set(dns=[{"listen": ["127.0.0.1"], "zones": ZONES}]),
        "dns[0].listen[0]: must be ADDRESS:PORT",
    ),
    (
        _set(dns=[{"listen": ["127.0.0.1:70000"], "zones": ZONES}]),
        "dns[0].listen[0]: port 70000 is out of range",
    ),
    (
        _set(dns=[{"listen": ["localhost:53"], "zones": ZONES}]),
        "dns[0].listen[0]: 'localhost' is not an IP address",
    ),
    (
        _set(dns=[{"listen": ["::1:53"], "zones": ZONES}]),
        "dns[0].listen[0]: an IPv6 address needs brackets",
    ),
    (_set(dns=[{"listen": [], "zones": ZONES}]), "dns[0].listen: must not be empty"),
    (_set(dns=[{"listen": ["127.0.0.1:0"]}]), "dns[0].zones: is required"),
    (
        _set(dns=[{"listen": ["127.0.0.1:0"], "zones": {"facebook.com": {"www": [["A", 60]]}}}]),
        "dns[0].zones['facebook.com']['www'][0]: must be [TYPE, TTL, RDATA]",
    ),
    (
        _set(
            dns=[
                {"listen": ["127.0.0.1:0"], "zones": {"facebook.com": {"www": [["A", "60", "x"]]}}}
            ]
        ),
        "dns[0].zones['facebook.com']['www'][0][1]: must be an integer",
    ),
    (
        _set(
            dns=[
                {
                    "listen": ["127.0.0.1:0"],
                    "zones": {"facebook.com": {"www": [["A", 60, "no-ip"]]}},
                }
            ]
        ),
        "dns[0].zones['facebook.com']: bad zone data",
    ),
    (
        _set(https=[{"listen": ["127.0.0.1:0"], "hostnames": ["face*book.com"]}]),
        "https[0].hostnames[0]: a wildcard must be one leftmost label",
    ),
    (
        _set(https=[{"listen": ["127.0.0.1:0"], "hostnames": []}]),
        "https[0].hostnames: must not be empty",
    ),
    (
        _set(https=[{"listen": ["127.0.0.1:0"], "hostnames": ["a.example"], "http3": "yes"}]),
        "https[0].http3: must be true or false, got 'yes'",
    ),
    (
        _set(
            tcp=[{"listen": ["127.0.0.2:0"], "name": "a"}, {"listen": ["127.0.0.2:0"], "name": "a"}]
        ),
        "tcp[1].name: 'a' is used twice",
    ),
    (
        _set(tcp=[{"listen": ["127.0.0.2:0"], "name": "a", "hold_seconds": 0}]),
        "tcp[0].hold_seconds: must be a number above 0",
    ),
    (
        _set(
            recursors=[
                {
                    "listen": ["127.0.0.1:0"],
                    "stubs": {"facebook.com": ["127.0.0.1:53"]},
                    "upstream_timeout": -1,
                }
            ]
        ),
        "recursors[0].upstream_timeout: must be a number above 0",
    ),
    (
        _set(recursors=[{"listen": ["127.0.0.1:0"], "stubs": {"facebook.com": ["127.0.0.1:0"]}}]),
        "recursors[0].stubs['facebook.com']: a stub server needs a real port",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_SPECS)
def test_bad_spec_names_the_field(
    workdir: Path, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = spec_doc(workdir)
    mutate(doc)
    with pytest.raises(SpecError, match="^" + re.escape(message)):
        NodeSpec.from_json(doc)


def test_spec_that_is_not_an_object() -> None:
    with pytest.raises(SpecError, match=r"^spec: must be a JSON object, got list"):
        NodeSpec.from_json([])


def test_spec_file_relative_paths_and_errors(workdir: Path) -> None:
    good = workdir / "good.json"
    good.write_text(json.dumps({"control_socket": "n.sock", "ca_dir": "ca"}))
    spec = NodeSpec.load(good)
    assert spec.control_socket == workdir / "n.sock"
    assert spec.ca_dir == workdir / "ca"

    broken = workdir / "broken.json"
    broken.write_text("{")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(broken))}: not JSON"):
        NodeSpec.load(broken)
    bad = workdir / "bad.json"
    bad.write_text(json.dumps({"ca_dir": "ca"}))
    with pytest.raises(SpecError, match=rf"^{re.escape(str(bad))}: control_socket: is required"):
        NodeSpec.load(bad)


# --------------------------------------------------------------------------- serving


async def test_status_lists_bound_ports_and_the_shared_ca(
    workdir: Path, node: tuple[SimNode, Control]
) -> None:
    _, control = node
    status = await control.status()
    assert status["control_socket"] == str(workdir / "node.sock")
    assert status["ca_file"] == str(workdir / "ca" / "lab-ca.pem")
    assert status["dns"][0]["listen"][0]["host"] == LOOPBACK
    assert status["dns"][0]["zones"] == ["facebook.com", "instagram.com"]
    assert status["https"][0]["hostnames"] == HOSTNAMES
    assert status["https"][0]["certs"]["graph.facebook.com"]["condition"] == "valid"
    assert status["tcp"][0] == {
        "name": CHAT,
        "mode": "accept",
        "listen": [{"host": LOOPBACK_2, "port": port_of(status, "tcp")}],
        "accepts": 0,
        "rejected": 0,
        "open_connections": 0,
    }
    assert status["recursors"] == []
    # The saved root is the CA the node issues under.
    assert LabCA.load(workdir / "ca").ca_pem() == Path(status["ca_file"]).read_bytes()


async def test_dns_answers_and_faults(node: tuple[SimNode, Control]) -> None:
    _, control = node
    port = port_of(await control.status(), "dns")

    reply = await ask_dns(port, "www.facebook.com")
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]

    await control.call("PUT", "/dns/faults", {"zone": "facebook.com", "fault": "servfail"})
    assert (await ask_dns(port, "www.facebook.com")).rcode() == dns.rcode.SERVFAIL
    assert (await ask_dns(port, "www.instagram.com")).rcode() == dns.rcode.NOERROR

    await control.call("PUT", "/dns/faults", {"zone": "*", "fault": "timeout"})
    with pytest.raises(dns.exception.Timeout):
        await ask_dns(port, "www.instagram.com", timeout=0.3)

    await control.call("PUT", "/dns/faults", {"zone": "*", "fault": None})
    status = await control.status()
    assert status["dns"][0]["faults"] == {"facebook.com": "servfail"}
    await control.call("PUT", "/dns/faults", {"zone": "facebook.com.", "fault": None})
    assert (await ask_dns(port, "www.facebook.com")).rcode() == dns.rcode.NOERROR

    status = await control.status()
    assert status["dns"][0]["faults"] == {}
    assert status["dns"][0]["queries_by_zone"] == {"facebook.com": 3, "instagram.com": 2}
    assert status["dns"][0]["queries"] == 5


async def test_https_with_the_shared_ca_and_http_faults(node: tuple[SimNode, Control]) -> None:
    sim, control = node
    port = port_of(await control.status(), "https")
    ca_file = str(sim.ca_file)

    status, body = await https_get(port, ca_file, "https://graph.facebook.com/me")
    assert status == 400
    assert json.loads(body)["error"]["message"] == ME_MESSAGE

    fault = {"host": "graph.facebook.com", "status": 503}
    assert (await control.call("PUT", "/http/faults", fault))["faults"][0]["status"] == 503
    assert (await https_get(port, ca_file, "https://graph.facebook.com/me"))[0] == 503
    assert (await https_get(port, ca_file, "https://www.facebook.com/"))[0] == 200

    many = [
        {"host": "*", "status": 500},
        {"host": "www.facebook.com", "path": "/login/", "status": 502},
    ]
    await control.call("PUT", "/http/faults", many)
    assert (await https_get(port, ca_file, "https://www.facebook.com/login/"))[0] == 502
    assert (await https_get(port, ca_file, "https://www.facebook.com/"))[0] == 500

    cleared = await control.call("DELETE", "/http/faults?host=www.facebook.com&path=/login/")
    assert cleared["cleared"] == 1
    assert len((await control.status())["http"]["faults"]) == 2
    assert (await control.call("DELETE", "/http/faults"))["cleared"] == 2
    assert (await https_get(port, ca_file, "https://graph.facebook.com/me"))[0] == 400

    requests = (await control.status())["http"]["requests"]
    assert requests == {"graph.facebook.com": 3, "www.facebook.com": 3}


async def test_http3_on_the_front_ends_own_address_and_port(
    workdir: Path, probe_env: ProbeEnv
) -> None:
    """`http3`: QUIC on UDP beside each front end's TCP port, forwarding to it (faults show
    over HTTP/3 too); PUT /quic delays every datagram in; reset takes the delay away."""
    https = [{"listen": [f"{LOOPBACK}:0"], "hostnames": HOSTNAMES, "http3": True}]
    async with running(spec_doc(workdir, https=https)) as (sim, control):
        env = ProbeEnv(probe_env.resolver, LOOPBACK_POLICY, str(sim.ca_file))
        status = await control.status()
        port = port_of(status, "https")
        assert status["https"][0]["http3"] == [{"host": LOOPBACK, "port": port, "delay": 0.0}]

        def h3(path: str = "/") -> Any:
            return make_check(
                "http",
                url=f"https://www.facebook.com:{port}{path}",
                http_version="3",
                resolve_to=(LOOPBACK,),
                timeout=5.0,
            )

        result = await run_probe(h3(), env)
        assert (result.success, result.http_version, result.http_status) == (True, "3", 200)
        await control.call("PUT", "/http/faults", {"host": "*", "status": 503})
        result = await run_probe(h3(), env)
        assert (result.reason, result.http_version, result.http_status) == (
            Reason.HTTP_STATUS,
            "3",
            503,
        )
        await control.call("DELETE", "/http/faults")
        assert (await control.call("PUT", "/quic", {"delay": 0.2}))["edges"] == 1
        result = await run_probe(h3(), env)
        assert result.success and result.phases[Phase.CONNECT] >= 0.2, dict(result.phases)
        await control.call("PUT", "/quic", {"delay": -1}, expect=400)
        await control.call("PUT", "/quic", {"delay": False}, expect=400)
        assert (await control.call("PUT", "/quic", {"delay": 0}))["delay"] == 0.0
        await control.call("PUT", "/quic", {"delay": 0.2})
        await control.call("POST", "/reset")
        assert (await control.status())["https"][0]["http3"][0]["delay"] == 0.0


async def test_quic_delay_needs_an_http3_edge(node: tuple[SimNode, Control]) -> None:
    _, control = node
    doc = await control.call("PUT", "/quic", {"delay": 0.1}, expect=400)
    assert "no HTTP/3" in doc["error"]
    assert (await control.status())["https"][0]["http3"] == []


async def test_cert_conditions(node: tuple[SimNode, Control]) -> None:
    sim, control = node
    port = port_of(await control.status(), "https")
    ca_file = str(sim.ca_file)
    url = "https://www.facebook.com/"

    async def set_cert(condition: str, **extra: Any) -> None:
        body = {"hostname": "www.facebook.com", "condition": condition, **extra}
        await control.call("PUT", "/certs", body)

    await set_cert("expired")
    assert await cert_error_code(port, ca_file, url) == CERT_HAS_EXPIRED
    assert (await https_get(port, ca_file, "https://m.facebook.com/"))[0] == 200  # wildcard
    await set_cert("wrong_ca")
    assert await cert_error_code(port, ca_file, url) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    await set_cert("wrong_host")
    assert await cert_error_code(port, ca_file, url) == HOSTNAME_MISMATCH

    await set_cert("expiring", days=3)
    assert (await https_get(port, ca_file, url))[0] == 200
    left = await peer_not_after(port, ca_file, "www.facebook.com") - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=2, hours=23) < left <= dt.timedelta(days=3)
    cert = (await control.status())["https"][0]["certs"]["www.facebook.com"]
    assert cert["condition"] == "expiring"

    await set_cert("valid")
    assert (await https_get(port, ca_file, url))[0] == 200


async def test_tcp_accept_refuse_hang(node: tuple[SimNode, Control]) -> None:
    _, control = node
    port = port_of(await control.status(), "tcp")

    reader, writer = await connect(port)
    with pytest.raises(TimeoutError):  # accepted, and the server says nothing
        await asyncio.wait_for(reader.read(1), 0.2)
    writer.write(b"hello")  # whatever the client sends is swallowed
    tcp = (await control.status())["tcp"][0]
    assert (tcp["accepts"], tcp["open_connections"]) == (1, 1)

    await control.call("PUT", "/tcp/mode", {"name": CHAT, "mode": "refuse"})
    with pytest.raises(ConnectionRefusedError):
        await connect(port)
    with contextlib.suppress(ConnectionResetError):  # held connections are reset too
        assert await asyncio.wait_for(reader.read(1), WAIT) == b""
    await hang_up(writer)

    await control.call("PUT", "/tcp/mode", {"name": CHAT, "mode": "hang"})
    with pytest.raises(TimeoutError):  # SYNs are dropped: the connect never completes
        await connect(port, timeout=0.5)
    assert (await control.status())["tcp"][0]["mode"] == "hang"

    await control.call("PUT", "/tcp/mode", {"name": CHAT, "mode": "accept"})
    reader, writer = await connect(port)  # the same port again
    await hang_up(writer)

    async def closed() -> bool:
        tcp = (await control.status())["tcp"][0]
        return tcp["open_connections"] == 0 and tcp["accepts"] == 2

    await eventually(closed)


async def test_tcp_connection_cap(node: tuple[SimNode, Control]) -> None:
    _, control = node
    port = port_of(await control.status(), "tcp")
    held = [await connect(port) for _ in range(2)]

    async def both_held() -> bool:
        return (await control.status())["tcp"][0]["open_connections"] == 2

    await eventually(both_held)
    reader, writer = await connect(port)  # the kernel accepts, the sink hangs up at once
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(1), WAIT) == b""
    await hang_up(writer)
    tcp = (await control.status())["tcp"][0]
    assert (tcp["accepts"], tcp["rejected"]) == (2, 1)
    for _, held_writer in held:
        await hang_up(held_writer)


async def test_reset_clears_everything(node: tuple[SimNode, Control]) -> None:
    sim, control = node
    status = await control.status()
    dns_port, https_port, tcp_port = (port_of(status, s) for s in ("dns", "https", "tcp"))
    ca_file = str(sim.ca_file)

    await ask_dns(dns_port, "www.facebook.com")
    await control.call("PUT", "/dns/faults", {"zone": "*", "fault": "refused"})
    await control.call("PUT", "/http/faults", {"host": "*", "status": 500})
    await control.call("PUT", "/certs", {"hostname": "graph.facebook.com", "condition": "expired"})
    await control.call("PUT", "/certs", {"hostname": "www.facebook.com", "condition": "wrong_ca"})
    await control.call("PUT", "/tcp/mode", {"name": CHAT, "mode": "refuse"})
    assert (
        await cert_error_code(https_port, ca_file, "https://graph.facebook.com/me")
        == CERT_HAS_EXPIRED
    )

    assert (await control.call("POST", "/reset"))["ok"] is True

    status = await control.status()
    assert status["dns"][0]["faults"] == {}
    assert status["dns"][0]["queries"] == 0
    assert status["http"] == {"requests": {}, "in_flight": 0, "faults": []}
    certs = status["https"][0]["certs"]
    assert {name: c["condition"] for name, c in certs.items()} == dict.fromkeys(HOSTNAMES, "valid")
    assert status["tcp"][0]["mode"] == "accept"
    assert status["tcp"][0]["accepts"] == 0
    assert (await ask_dns(dns_port, "www.facebook.com")).rcode() == dns.rcode.NOERROR
    assert (await https_get(https_port, ca_file, "https://graph.facebook.com/me"))[0] == 400
    assert (await https_get(https_port, ca_file, "https://www.facebook.com/"))[0] == 200
    _, writer = await connect(tcp_port)
    await hang_up(writer)


BAD_CONTROL = [
    ("PUT", "/dns/faults", {"zone": "facebook.com", "fault": "bogus"}, "fault"),
    ("PUT", "/dns/faults", {"zone": "example.org", "fault": "servfail"}, "zone"),
    ("PUT", "/dns/faults", {"zone": 7, "fault": "servfail"}, "zone"),
    ("PUT", "/dns/faults", {"fault": "servfail"}, "zone"),
    ("PUT", "/dns/faults", {"zone": "*", "fault": None, "extra": 1}, "extra"),
    ("PUT", "/dns/faults", ["zone"], "body"),
    ("PUT", "/http/faults", {"host": "www.facebook.com", "status": 700}, "status"),
    ("PUT", "/http/faults", {"hots": "www.facebook.com"}, "hots"),
    ("PUT", "/certs", {"hostname": "www.instagram.com", "condition": "expired"}, "hostname"),
    ("PUT", "/certs", {"hostname": "www..facebook.com", "condition": "expired"}, "hostname"),
    ("PUT", "/certs", {"hostname": "www.facebook.com", "condition": "rotten"}, "condition"),
    ("PUT", "/certs", {"hostname": "www.facebook.com", "condition": "expiring"}, "days"),
    (
        "PUT",
        "/certs",
        {"hostname": "www.facebook.com", "condition": "expiring", "days": -1},
        "days",
    ),
    ("PUT", "/certs", {"hostname": "www.facebook.com", "condition": "valid", "days": 3}, "days"),
    ("PUT", "/tcp/mode", {"name": "nope", "mode": "accept"}, "name"),
    ("PUT", "/tcp/mode", {"name": CHAT, "mode": "sleep"}, "mode"),
]


@pytest.mark.parametrize(("method", "path", "body", "named"), BAD_CONTROL)
async def test_bad_control_input_is_400_naming_the_field(
    node: tuple[SimNode, Control], method: str, path: str, body: Any, named: str
) -> None:
    _, control = node
    doc = await control.call(method, path, body, expect=400)
    assert named in doc["error"]
    # Nothing was changed by the refused request.
    status = await control.status()
    assert status["dns"][0]["faults"] == {} and status["http"]["faults"] == []


async def test_control_rejects_non_json_and_unknown_paths(node: tuple[SimNode, Control]) -> None:
    _, control = node
    doc = await control.call("PUT", "/dns/faults", raw="zone=*", expect=400)
    assert doc["field"] == "body"
    assert (await control.call("GET", "/nothing", expect=404))["error"] == "Not Found"
    assert (await control.call("GET", "/reset", expect=405))["error"] == "Method Not Allowed"


# --------------------------------------------------------------------------- start and stop


@pytest.mark.parametrize("section", ["dns", "https", "tcp"])
async def test_a_taken_port_fails_the_start_and_leaves_nothing(workdir: Path, section: str) -> None:
    host = LOOPBACK_2 if section == "tcp" else LOOPBACK
    with socket.socket() as taken:
        taken.bind((host, 0))
        taken.listen()
        addr = f"{host}:{taken.getsockname()[1]}"
        doc = spec_doc(workdir)
        doc[section][0]["listen"] = [addr]
        what = f"tcp '{CHAT}'" if section == "tcp" else f"{section}[0]"
        node = SimNode(NodeSpec.from_json(doc))
        with pytest.raises(NodeError, match=rf"^{re.escape(what)}: cannot listen on {addr}: "):
            await node.start()
    assert not (workdir / "node.sock").exists()


async def test_two_nodes_share_one_ca_and_not_one_socket(workdir: Path) -> None:
    first, second = (SimNode(NodeSpec.from_json(spec_doc(workdir, name))) for name in "ab")
    # Started together: the file lock lets exactly one of them create the CA.
    await asyncio.gather(first.start(), second.start())
    try:
        for sim in (first, second):
            port = sim.status()["https"][0]["listen"][0]["port"]
            status, _ = await https_get(port, str(first.ca_file), "https://graph.facebook.com/me")
            assert status == 400

        twin = SimNode(NodeSpec.from_json(spec_doc(workdir, "a")))
        with pytest.raises(NodeError, match=r"^control_socket: another process is listening on"):
            await twin.start()
        assert (workdir / "a.sock").exists()  # the live node's socket was left alone
    finally:
        await first.close()
        await second.close()
    assert not (workdir / "a.sock").exists()
    assert not (workdir / "b.sock").exists()


async def test_stale_control_socket_is_replaced_but_a_file_is_not(workdir: Path) -> None:
    path = workdir / "node.sock"
    with socket.socket(socket.AF_UNIX) as crashed:  # a node that died without cleaning up
        crashed.bind(str(path))
    async with running(spec_doc(workdir)) as (_, control):
        assert (await control.status())["control_socket"] == str(path)
    assert not path.exists()

    path.write_text("not a socket")
    with pytest.raises(NodeError, match=rf"^control_socket: {re.escape(str(path))} exists"):
        await SimNode(NodeSpec.from_json(spec_doc(workdir))).start()
    assert path.read_text() == "not a socket"


async def test_recursor_section(workdir: Path) -> None:
    if importlib.util.find_spec("exporter.sim.recursor") is None:
        pytest.skip("exporter.sim.recursor is not written yet: the recursor part is untested")
    async with running(spec_doc(workdir, "auth", https=[], tcp=[])) as (_, auth):
        dns_port = port_of(await auth.status(), "dns")
        stubs = {"facebook.com": [f"{LOOPBACK}:{dns_port}"]}
        recursors = [{"listen": [f"{LOOPBACK_2}:0"], "stubs": stubs, "upstream_timeout": 0.3}]
        doc = spec_doc(workdir, "rec", dns=[], https=[], tcp=[], recursors=recursors)
        async with running(doc) as (_, rec):
            status = await rec.status()
            port = status["recursors"][0]["listen"][0]["port"]
            assert status["recursors"][0]["stubs"] == stubs

            async def resolve() -> dns.message.Message:
                query = dns.message.make_query("www.facebook.com", "A")
                return await dns.asyncquery.udp(query, LOOPBACK_2, port=port, timeout=2.0)

            reply = await resolve()
            assert reply.rcode() == dns.rcode.NOERROR
            assert reply.answer[-1][0].address == LOOPBACK  # type: ignore[attr-defined]

            await auth.call("PUT", "/dns/faults", {"zone": "facebook.com", "fault": "servfail"})
            assert (await resolve()).rcode() == dns.rcode.NOERROR  # still cached
            assert (await rec.call("POST", "/recursor/flush"))["flushed"] == 1
            assert (await resolve()).rcode() == dns.rcode.SERVFAIL

            stats = (await rec.status())["recursors"][0]["stats"]
            assert stats["queries"] == 3 and stats["servfails"] == 1
            await rec.call("POST", "/reset")
            assert (await rec.status())["recursors"][0]["stats"]["queries"] == 0


async def test_recursor_needs_its_module_only_when_listed(workdir: Path) -> None:
    # A node without a "recursors" section never imports exporter.sim.recursor.
    async with running(spec_doc(workdir)) as (sim, _):
        assert sim.status()["recursors"] == []
    code = "import sys, exporter.sim.node; print('exporter.sim.recursor' in sys.modules)"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    assert out.strip() == b"False"


# --------------------------------------------------------------------------- the process


async def _start_process(spec_file: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter.sim",
        "node",
        "--spec",
        str(spec_file),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@contextlib.asynccontextmanager
async def _reaped(proc: asyncio.subprocess.Process) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.communicate(), WAIT)


async def test_node_process_ready_line_api_and_sigterm(workdir: Path) -> None:
    spec_file = workdir / "spec.json"
    spec_file.write_text(json.dumps(spec_doc(workdir)))
    proc = await _start_process(spec_file)
    async with _reaped(proc):
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
        ready = json.loads(line)
        assert ready["ready"] is True
        assert ready["control_socket"] == str(workdir / "node.sock")

        control = Control(Path(ready["control_socket"]))
        try:
            status = await control.status()
            await control.call("PUT", "/dns/faults", {"zone": "*", "fault": "nxdomain"})
            reply = await ask_dns(port_of(status, "dns"), "www.facebook.com")
            assert reply.rcode() == dns.rcode.NXDOMAIN
        finally:
            await control.close()

        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), WAIT)
        assert proc.returncode == 0, err.decode()
    assert not (workdir / "node.sock").exists()
    assert b"stopping" in err


async def test_node_process_exits_nonzero_with_a_message(workdir: Path) -> None:
    bad_spec = workdir / "bad.json"
    bad_spec.write_text(json.dumps({"ca_dir": "ca"}))
    with socket.socket() as taken:
        taken.bind((LOOPBACK_2, 0))
        taken.listen()
        addr = f"{LOOPBACK_2}:{taken.getsockname()[1]}"
        doc = spec_doc(workdir)
        doc["tcp"][0]["listen"] = [addr]
        busy_spec = workdir / "busy.json"
        busy_spec.write_text(json.dumps(doc))
        for spec_file, code, message in [
            (bad_spec, 2, f"sim node: bad spec: {bad_spec}: control_socket: is required"),
            (
                busy_spec,
                1,
                f"sim node: tcp '{CHAT}': cannot listen on {addr}: Address already in use",
            ),
        ]:
            proc = await _start_process(spec_file)
            async with _reaped(proc):
                out, err = await asyncio.wait_for(proc.communicate(), 30.0)
            assert proc.returncode == code
            assert message in err.decode()
            assert out == b""  # no ready line
    assert not (workdir / "node.sock").exists()
    assert os.listdir(workdir / "ca")  # the CA was created before the bind failed
