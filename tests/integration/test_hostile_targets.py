"""Hostile targets: every probe ends within its timeout with the right reason, and neither the
exporter's memory nor a healthy probe running beside it notices.

One case per hostile target the hardening issue lists, all on loopback: slowloris (an answer
at a byte a second), an endless body, gigantic headers (endless header lines, one endless
line), a redirect loop, a TLS handshake that stalls, a DNS answer with 1000 records, a
truncated UDP answer (the full one over TCP), and servers that accept and never answer (HTTP,
DNS over TCP). The simulated front end and DNS server of tests/conftest.py play the targets
they can; small asyncio servers (tests/integration/test_tcp_tls_probe.serving) the rest.
While each hostile probe runs, a healthy HTTPS probe repeats against the simulated front end:
its durations must stay within generous bounds of its own baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.model import Reason
from exporter.probes import ProbeEnv, run_probe
from exporter.sim import dnsserver
from exporter.sim.dnsserver import DnsServer
from exporter.sim.frontend import Fault, FrontendServer
from exporter.spec import CheckSpec
from tests.conftest import make_check
from tests.integration.test_tcp_tls_probe import Handler, serving, until_eof

TIMEOUT = 1.0  # every hostile check's deadline
SLACK = 0.5  # event loop and a shared CI machine on top of it
RSS_BOUND_MIB = 20  # growth allowed after every hostile case, three times over
WWW = "www.facebook.com"


@dataclass(frozen=True)
class Targets:
    frontend: FrontendServer
    dns_server: DnsServer


Case = Callable[[Targets], contextlib.AbstractAsyncContextManager[CheckSpec]]


def http_check(port: int, scheme: str = "http", **params: Any) -> CheckSpec:
    return make_check("http", url=f"{scheme}://{WWW}:{port}/", timeout=TIMEOUT, **params)


async def _drain_request(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(5):
        await reader.readuntil(b"\r\n\r\n")


async def _byte_a_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _drain_request(reader)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
        writer.write(bytes([byte]))
        await writer.drain()  # raises once the client has gone
        await asyncio.sleep(1.0)


def _endless(head: bytes, repeated: bytes) -> Handler:
    """A server that answers the request with `head`, then `repeated` forever, at full speed."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _drain_request(reader)
        writer.write(head)
        async with asyncio.timeout(10):
            while True:
                writer.write(repeated)
                await writer.drain()  # raises once the client has gone

    return handler


def _raw_case(handler: Handler, check: Callable[[int], CheckSpec]) -> Case:
    """A case played by a small asyncio server: `check` gets its port."""

    @contextlib.asynccontextmanager
    async def case(_: Targets) -> AsyncIterator[CheckSpec]:
        async with serving(handler) as port:
            yield check(port)

    return case


OK_HEAD = b"HTTP/1.1 200 OK\r\n"
CHUNK = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
slowloris = _raw_case(_byte_a_second, http_check)
endless_body = _raw_case(
    _endless(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", CHUNK),
    lambda port: http_check(port, max_body_bytes=256 * 1024),
)
endless_header_lines = _raw_case(
    _endless(OK_HEAD, (b"X-Filler: " + b"a" * 100 + b"\r\n") * 100), http_check
)
endless_header_line = _raw_case(_endless(OK_HEAD + b"X-Filler: ", b"a" * 64 * 1024), http_check)
stalled_tls_handshake = _raw_case(until_eof, lambda port: http_check(port, scheme="https"))
stalled_tls_handshake_tls_check = _raw_case(
    until_eof, lambda port: make_check("tls", host=WWW, port=port, timeout=TIMEOUT)
)
accepts_never_answers_http = _raw_case(until_eof, http_check)
accepts_never_answers_dns_tcp = _raw_case(
    until_eof,
    lambda port: make_check(
        "dns",
        qname="facebook.com",
        mode="authoritative",
        nameservers=[f"127.0.0.1:{port}"],
        transport="tcp",
        timeout=TIMEOUT,
    ),
)


@contextlib.asynccontextmanager
async def redirect_loop(targets: Targets) -> AsyncIterator[CheckSpec]:
    targets.frontend.state.set_fault(Fault(host=WWW, path="/loop", redirect_loop=True))
    port = targets.frontend.port
    yield make_check("http", url=f"https://{WWW}:{port}/loop", timeout=TIMEOUT, max_redirects=50)


def _dns_fault_case(fault: str, qname: str) -> Case:
    @contextlib.asynccontextmanager
    async def case(targets: Targets) -> AsyncIterator[CheckSpec]:
        targets.dns_server.set_fault("facebook.com", fault)
        try:
            yield make_check("dns", qname=qname, timeout=TIMEOUT)
        finally:
            targets.dns_server.clear_fault("facebook.com")

    return case


# (id, target, reason, phase named in the detail of a timeout or None)
CASES: list[tuple[str, Case, Reason, str | None]] = [
    # libcurl marks the answer's start at its first whole line (the status line, 17 bytes here,
    # 17 s at a byte a second): a server stalling inside that line is still `processing`.
    ("slowloris-byte-a-second", slowloris, Reason.HTTP_TIMEOUT, "processing"),
    ("endless-body", endless_body, Reason.BODY_TOO_LARGE, None),
    ("gigantic-headers-endless-lines", endless_header_lines, Reason.HTTP_PROTOCOL, None),
    ("gigantic-headers-endless-line", endless_header_line, Reason.HTTP_PROTOCOL, None),
    ("redirect-loop", redirect_loop, Reason.HTTP_REDIRECT_LOOP, None),
    ("tls-handshake-stalls-http", stalled_tls_handshake, Reason.TLS_TIMEOUT, "tls"),
    ("tls-handshake-stalls-tls", stalled_tls_handshake_tls_check, Reason.TLS_TIMEOUT, "tls"),
    ("dns-1000-records", _dns_fault_case("huge", "facebook.com"), Reason.OK, None),
    ("dns-truncated-udp-falls-back-to-tcp", _dns_fault_case("truncate", WWW), Reason.OK, None),
    ("accepts-never-answers-http", accepts_never_answers_http, Reason.HTTP_TIMEOUT, "processing"),
    ("accepts-never-answers-dns-tcp", accepts_never_answers_dns_tcp, Reason.DNS_TIMEOUT, None),
]


@pytest.fixture
def targets(frontend: FrontendServer, dns_server: DnsServer) -> Targets:
    return Targets(frontend, dns_server)


class HealthyProbe:
    """A healthy HTTPS check probed back to back, its durations recorded (the bystander)."""

    def __init__(self, frontend: FrontendServer, env: ProbeEnv) -> None:
        self.check = make_check("http", url=f"https://{WWW}:{frontend.port}/", timeout=5.0)
        self.env = env
        self.durations: list[float] = []
        self.failures: list[str] = []

    async def baseline(self, rounds: int = 10) -> float:
        for _ in range(rounds):
            await self.once()
        median = statistics.median(self.durations)
        self.durations.clear()
        return median

    async def once(self) -> None:
        result = await run_probe(self.check, self.env)
        self.durations.append(result.duration)
        if not result.success:
            self.failures.append(f"{result.reason.value}: {result.detail}")

    async def run_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.once()
            await asyncio.sleep(0.02)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.parametrize(
    ("case", "reason", "phase"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
async def test_hostile_target_ends_in_time_with_its_reason(
    case: Case,
    reason: Reason,
    phase: str | None,
    targets: Targets,
    probe_env: ProbeEnv,
) -> None:
    bystander = HealthyProbe(targets.frontend, probe_env)
    baseline = await bystander.baseline()
    stop = asyncio.Event()
    async with case(targets) as check:
        watcher = asyncio.create_task(bystander.run_until(stop))
        started = time.perf_counter()
        result = await run_probe(check, probe_env)
        elapsed = time.perf_counter() - started
        stop.set()
        await watcher
    assert result.reason is reason, result.detail
    assert elapsed <= TIMEOUT + SLACK, f"{elapsed:.2f}s for a {TIMEOUT}s deadline"
    assert result.duration <= TIMEOUT + SLACK
    if phase is not None:
        assert f"during {phase}" in result.detail, result.detail
    if check.kind == "dns" and reason is Reason.OK:
        expected = dnsserver.HUGE_COUNT if check.params.name == "facebook.com" else 1
        assert result.dns_answers == expected
        assert targets.dns_server.tcp_queries >= 1  # the full answer came over TCP
    # The bystander kept probing, never failed, and was not slowed beyond generous bounds.
    assert bystander.durations, "the healthy probe never ran beside the hostile one"
    assert not bystander.failures, bystander.failures
    bound = max(1.0, 10 * baseline)
    assert max(bystander.durations) <= bound, (baseline, bystander.durations)


async def test_hostile_targets_leave_memory_and_fds_flat(
    targets: Targets, probe_env: ProbeEnv
) -> None:
    """Every hostile case three times, all at once: RSS grows by less than RSS_BOUND_MIB
    and no fd is left open."""
    fds = Path("/proc/self/fd")

    async def one(case: Case) -> Reason:
        async with case(targets) as check:
            return (await run_probe(check, probe_env)).reason

    # The DNS fault cases share one zone's fault switch: keep them out of the concurrent rounds.
    concurrent = [c for c in CASES if not c[0].startswith("dns-")]
    await asyncio.gather(*(one(c[1]) for c in concurrent))  # warm caches and pools first
    await asyncio.sleep(0.1)
    rss_before, fds_before = rss_mib(), len(list(fds.iterdir()))
    for _ in range(3):
        reasons = await asyncio.gather(*(one(c[1]) for c in concurrent))
        assert reasons == [c[2] for c in concurrent]
    await asyncio.sleep(0.2)  # closed transports finish closing
    grown = rss_mib() - rss_before
    assert grown < RSS_BOUND_MIB, f"RSS grew {grown:.1f} MiB"
    assert len(list(fds.iterdir())) <= fds_before + 2
