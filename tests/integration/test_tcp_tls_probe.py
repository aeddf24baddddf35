"""The tcp and tls probers against real listeners on loopback (127.0.0.1 and ::1 only).

TCP outcomes come from plain sockets (listening, closed, or with a full accept queue);
TLS outcomes from the simulated front end, whose certificate is chosen by SNI, and from
small asyncio servers that misbehave on purpose. Names resolve through the fake DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from exporter.model import Layer, Phase, Reason
from exporter.probes import ProbeEnv, run_probe
from exporter.sim.certs import CertSpec, LabCA, SniCertificates
from exporter.sim.dnsserver import DnsServer
from exporter.sim.frontend import FrontendServer
from tests.conftest import assert_outcome, closed_port, make_check

SLACK = 0.5  # event loop and CI headroom on top of a check's timeout
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def layer_of(reason: Reason) -> Layer:
    return Layer.NONE if reason is Reason.OK else reason.layer


@contextlib.contextmanager
def listening(host: str = "127.0.0.1", backlog: int = 8) -> Iterator[socket.socket]:
    """A listening socket that never accepts: the kernel completes handshakes for it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"cannot listen on {host}: {exc}")
    with sock:
        sock.listen(backlog)
        yield sock


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """An asyncio server on 127.0.0.1; its connection handlers end (or are cancelled) on exit."""
    tasks: set[asyncio.Task[Any]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()


async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and say nothing until the client hangs up (bounded by the client's deadline)."""
    async with asyncio.timeout(10):
        while await reader.read(4096):
            pass


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


# ----------------------------------------------------------------------------- tcp


async def test_tcp_connects_to_a_listener(probe_env: ProbeEnv) -> None:
    with listening() as listener:
        port = listener.getsockname()[1]
        result = await run_probe(make_check("tcp", host="127.0.0.1", port=port), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.address_family == "ipv4"
    assert Phase.CONNECT in result.phases


async def test_tcp_connects_to_a_name_resolved_by_fake_dns(
    probe_env: ProbeEnv, dns_server: DnsServer
) -> None:
    with listening() as listener:
        port = listener.getsockname()[1]
        check = make_check("tcp", host="v4only.facebook.com", port=port)
        result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert dns_server.count("v4only.facebook.com", "A") == 1
    assert result.phases[Phase.RESOLVE] > 0 and result.phases[Phase.CONNECT] > 0


async def test_tcp_refused_on_a_closed_port(probe_env: ProbeEnv) -> None:
    check = make_check("tcp", host="127.0.0.1", port=closed_port())
    result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.TCP_REFUSED, Layer.TCP)


async def test_tcp_timeout_when_syns_are_dropped(probe_env: ProbeEnv) -> None:
    """A listener whose accept queue is full: Linux drops further SYNs, connect hangs."""
    fillers: list[socket.socket] = []
    with listening(backlog=0) as listener:
        try:
            addr = listener.getsockname()
            for _ in range(3):
                filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(addr)
            await asyncio.sleep(0.05)  # let the kernel finish the fillers' handshakes
            if not _syn_dropped(addr):
                pytest.skip("this kernel answers SYNs to a listener with a full accept queue")
            timeout = 0.5
            check = make_check("tcp", host="127.0.0.1", port=addr[1], timeout=timeout)
            result = await run_probe(check, probe_env)
        finally:
            for filler in fillers:
                filler.close()
    assert_outcome(result, Reason.TCP_TIMEOUT, Layer.TCP)
    assert timeout <= result.duration < timeout + SLACK
    assert "during connect" in result.detail


def _syn_dropped(addr: tuple[str, int]) -> bool:
    """Whether one more connect to addr stays unanswered for 0.2 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(addr)
        except TimeoutError:
            return True
        except OSError:
            return False
        return False


async def test_tcp_resolve_to_override_skips_dns(
    probe_env: ProbeEnv, dns_server: DnsServer
) -> None:
    with listening() as listener:
        port = listener.getsockname()[1]
        check = make_check(
            "tcp", host="not-in-dns.facebook.com", port=port, resolve_to=("127.0.0.1",)
        )
        result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert dns_server.queries == 0


@pytest.mark.parametrize("host", ["::1", "www.facebook.com", "v6only.facebook.com"])
async def test_tcp_ipv6(host: str, probe_env: ProbeEnv) -> None:
    with listening("::1") as listener:
        port = listener.getsockname()[1]
        check = make_check("tcp", host=host, port=port, ip_family="ip6")
        result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.address_family == "ipv6"


@pytest.mark.parametrize(
    ("host", "family", "reason"),
    [
        ("v6only.facebook.com", "ip4", Reason.DNS_NO_ANSWER),
        ("v4only.facebook.com", "ip6", Reason.DNS_NO_ANSWER),
        ("::1", "ip4", Reason.DNS_NO_ANSWER),  # an address of the wrong family
        ("no-such-name.facebook.com", "auto", Reason.DNS_NXDOMAIN),
    ],
)
async def test_tcp_name_without_address_in_family(
    host: str, family: str, reason: Reason, probe_env: ProbeEnv
) -> None:
    check = make_check("tcp", host=host, port=closed_port(), ip_family=family)
    result = await run_probe(check, probe_env)
    assert_outcome(result, reason, Layer.DNS)


# ----------------------------------------------------------------------------- tls


def tls_check(port: int, **params: Any) -> Any:
    return make_check("tls", host="www.facebook.com", port=port, **params)


async def test_tls_ok_reports_version_and_expiry(
    frontend: FrontendServer, certificates: SniCertificates, probe_env: ProbeEnv, ca_file: Any
) -> None:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    certificates.set("www.facebook.com", CertSpec.expiring_at(expires))
    result = await run_probe(tls_check(frontend.port, ca_file=str(ca_file)), probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)
    assert result.tls_version == "TLSv1.3"
    assert result.tls_expiry == pytest.approx(expires.timestamp(), abs=1.0)
    assert result.phases[Phase.CONNECT] > 0 and result.phases[Phase.TLS] > 0


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(CertSpec.expired(), Reason.TLS_CERT_EXPIRED, id="expired"),
        pytest.param(CertSpec.unknown_ca(), Reason.TLS_CERT_INVALID, id="unknown-ca"),
        pytest.param(CertSpec.wrong_host(), Reason.TLS_HOSTNAME_MISMATCH, id="wrong-host"),
        pytest.param(
            CertSpec(
                not_before=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=90),
            ),
            Reason.TLS_CERT_INVALID,
            id="not-yet-valid",
        ),
    ],
)
async def test_tls_certificate_failures(
    spec: CertSpec,
    reason: Reason,
    frontend: FrontendServer,
    certificates: SniCertificates,
    probe_env: ProbeEnv,
) -> None:
    certificates.set("www.facebook.com", spec)
    result = await run_probe(tls_check(frontend.port), probe_env)
    assert_outcome(result, reason, Layer.TLS)
    assert result.tls_version is None


async def test_tls_server_name_overrides_sni(
    frontend: FrontendServer, certificates: SniCertificates, probe_env: ProbeEnv
) -> None:
    """Connect to one name, verify another: the cert for the SNI name is what counts."""
    certificates.set("www.facebook.com", CertSpec.wrong_host())
    check = tls_check(frontend.port, server_name="m.facebook.com")
    result = await run_probe(check, probe_env)
    assert_outcome(result, Reason.OK, Layer.NONE)


async def test_tls_timeout_when_server_never_speaks_tls(probe_env: ProbeEnv) -> None:
    timeout = 0.5
    async with serving(until_eof) as port:
        result = await run_probe(tls_check(port, timeout=timeout), probe_env)
    assert_outcome(result, Reason.TLS_TIMEOUT, Layer.TLS)
    assert result.duration < timeout + SLACK
    assert "during tls" in result.detail


async def test_tls_handshake_when_server_hangs_up(probe_env: ProbeEnv) -> None:
    async with serving(close_at_once) as port:
        result = await run_probe(tls_check(port), probe_env)
    assert_outcome(result, Reason.TLS_HANDSHAKE, Layer.TLS)


@pytest.fixture
def tls12_only(lab_ca: LabCA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    lab_ca.issue(["www.facebook.com"]).configure_cert(context)
    return context


@pytest.mark.parametrize(
    ("min_version", "reason"),
    [(None, Reason.OK), ("TLSv1.2", Reason.OK), ("TLSv1.3", Reason.TLS_VERSION)],
)
async def test_tls_min_version(
    min_version: str | None, reason: Reason, tls12_only: ssl.SSLContext, probe_env: ProbeEnv
) -> None:
    async with serving(until_eof, tls12_only) as port:
        result = await run_probe(tls_check(port, min_version=min_version), probe_env)
    assert_outcome(result, reason, layer_of(reason))
    assert result.tls_version == "TLSv1.2"


async def test_tls_refused_is_a_tcp_failure(probe_env: ProbeEnv) -> None:
    """A closed port reads the same in a tls check as in a tcp check."""
    started = time.perf_counter()
    result = await run_probe(tls_check(closed_port()), probe_env)
    assert_outcome(result, Reason.TCP_REFUSED, Layer.TCP)
    assert time.perf_counter() - started < 1.0
