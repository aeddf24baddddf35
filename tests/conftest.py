"""Shared fixtures: a fake Meta on loopback (DNS + HTTPS with a lab CA) and check builders.

Every address used here is on loopback; the egress policy of every exporter built by these
fixtures allows loopback only, so a mistake cannot reach the real Meta.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from exporter.egress import LOOPBACK, EgressPolicy
from exporter.model import Layer, ProbeResult, Reason
from exporter.net.resolver import Resolver
from exporter.probes import REGISTRY, ProbeEnv
from exporter.sim.certs import CertSpec, LabCA, SniCertificates
from exporter.sim.dnsserver import DnsServer, Zone
from exporter.sim.frontend import FrontendServer, FrontendState
from exporter.spec import CheckSpec, Endpoint


def pytest_configure(config: pytest.Config) -> None:
    """Run as a shell's background job (`cmd &`), pytest starts with SIGINT ignored, and an
    ignored signal stays ignored across exec: the exporters the tests start would never see
    the Ctrl-C that tests/integration/test_cli_watch.py sends. Handled, it resets at exec."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


LOOPBACK_POLICY = EgressPolicy.from_strings(LOOPBACK)

# The fake Meta zones: every name points at loopback, where the fake front end listens.
FAKE_ZONES = {
    "facebook.com": {
        "@": [
            ("NS", 172800, "a.ns.facebook.com."),
            ("SOA", 3600, "a.ns.facebook.com. dns.facebook.com. 1 7200 1800 604800 60"),
            ("A", 60, "127.0.0.1"),
        ],
        "www": [("CNAME", 300, "star-mini.c10r.facebook.com.")],
        "star-mini.c10r": [("A", 60, "127.0.0.1"), ("AAAA", 60, "::1")],
        "m": [("A", 60, "127.0.0.1")],
        "graph": [("A", 60, "127.0.0.1")],
        "a.ns": [("A", 172800, "127.0.0.1")],
        "v4only": [("A", 60, "127.0.0.1")],
        "v6only": [("AAAA", 60, "::1")],
    },
    "instagram.com": {
        "@": [
            ("SOA", 3600, "a.ns.instagram.com. dns.instagram.com. 1 7200 1800 604800 60"),
            ("A", 60, "127.0.0.1"),
        ],
        "www": [("A", 60, "127.0.0.1")],
    },
    "example.com": {"@": [("A", 60, "127.0.0.1")]},
}


def zones() -> list[Zone]:
    return [Zone.from_records(apex, records) for apex, records in FAKE_ZONES.items()]


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    async with DnsServer(zones(), host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture(scope="session")
def lab_ca() -> LabCA:
    return LabCA()


@pytest.fixture(scope="session")
def ca_file(lab_ca: LabCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lab_ca.ca_pem_path(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def certificates(lab_ca: LabCA) -> SniCertificates:
    """Per-hostname certificate conditions; tests flip one with certificates.set(...)."""
    return lab_ca.sni_server(
        {
            "*.facebook.com": CertSpec.valid(),
            "facebook.com": CertSpec.valid(),
            "www.instagram.com": CertSpec.valid(),
            "127.0.0.1": CertSpec.valid(),
        }
    )


@pytest.fixture
async def frontend(certificates: SniCertificates) -> AsyncIterator[FrontendServer]:
    async with FrontendServer(FrontendState(), certificates.ssl_context) as server:
        yield server


@pytest.fixture
def probe_env(dns_server: DnsServer, ca_file: Path) -> ProbeEnv:
    resolver = Resolver(
        [Endpoint("127.0.0.1", dns_server.port)], LOOPBACK_POLICY, attempt_timeout=0.5
    )
    return ProbeEnv(resolver, LOOPBACK_POLICY, str(ca_file))


def make_check(
    kind: str, *, name: str = "test", service: str = "facebook", **raw: Any
) -> CheckSpec:
    """A CheckSpec for tests: prober params from `raw`, common settings with test defaults."""
    common = {
        "interval": 1.0,
        "timeout": 2.0,
        "recheck_interval": 0.1,
        "critical": True,
        "ip_family": "auto",
        "latency_threshold": 1.0,
        "resolve_to": (),
    }
    for key in list(raw):
        if key in common:
            common[key] = raw.pop(key)
    if "qname" in raw:  # the DNS prober's `name` param; `name` here is the check's name
        raw["name"] = raw.pop("qname")
    params_cls = REGISTRY[kind].params
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    converted = {k: tuple(v) if isinstance(v, list) and k in fields else v for k, v in raw.items()}
    return CheckSpec(
        service=service, name=name, kind=kind, params=params_cls(**converted), **common
    )


@pytest.fixture
def check_factory() -> Iterator[Any]:
    yield make_check


def assert_outcome(result: ProbeResult, reason: Reason, layer: Layer) -> None:
    """A probe result's reason, layer and success, in one assertion with the detail shown."""
    assert (result.reason, result.layer, result.success) == (
        reason,
        layer,
        reason is Reason.OK,
    ), result.detail


def closed_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on (bound to learn it, then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LoopbackResolver(AbstractResolver):
    """aiohttp resolver for tests: every name resolves to `port` on 127.0.0.1, so SNI and Host
    stay the URL's while the connection never leaves loopback."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self.port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass
