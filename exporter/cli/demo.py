"""`meta-outage-exporter demo`: the real exporter against a simulated Meta on loopback.

No root, no internet: a DNS server, an HTTPS front end (lab CA) with HTTP/3 on the same
port, a status page and a RIS Live stream on 127.0.0.1 stand in for Meta and the outside
feeds; the HTTP/3 control checks reach an edge of their own, so Meta's QUIC can fail alone.
The built-in catalogue is re-pointed at them (the egress policy allows loopback only), and a
script replays real outages one after another, so a newcomer — or someone judging the
dashboards — sees every status and layer within a minute.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from exporter.config import loader
from exporter.sim.certs import CertSpec, LabCA, SniCertificates
from exporter.sim.dnsserver import DnsServer, Zone
from exporter.sim.edge import EdgeServer
from exporter.sim.feeds import FeedServer, peers
from exporter.sim.frontend import Fault, FrontendServer, FrontendState, HostSpec
from exporter.spec import Config

log = logging.getLogger(__name__)

CONTROL_HOSTS = ("example.com", "www.example.com")
LOOPBACK = "127.0.0.1"


def catalogue_hostnames(catalogue: Config) -> set[str]:
    """Every name the catalogue's checks look up or connect to."""
    names: set[str] = set(CONTROL_HOSTS)
    for check in catalogue.checks:
        params = check.params
        host = URL(params.url).host if check.kind == "http" else getattr(params, "host", None)
        names.add((host or params.name).lower().rstrip("."))
    return {n for n in names if not n.replace(".", "").isdigit()}  # IP literals need no DNS


def apex_of(name: str) -> str:
    return ".".join(name.split(".")[-2:])


def demo_zones(hostnames: set[str]) -> list[Zone]:
    """One zone per apex, every name pointing at loopback."""
    zones: dict[str, dict[str, list[tuple[str, int, str]]]] = {}
    for name in sorted(hostnames):
        apex = apex_of(name)
        records = zones.setdefault(
            apex, {"@": [("SOA", 3600, f"ns.{apex}. dns.{apex}. 1 7200 900 604800 60")]}
        )
        relative = "@" if name == apex else name.removesuffix("." + apex)
        records.setdefault(relative, []).append(("A", 30, LOOPBACK))
    return [Zone.from_records(apex, records) for apex, records in zones.items()]


def demo_overlay(
    catalogue: Config, dns_port: int, https_port: int, ca_file: Path, control_h3_port: int
) -> dict[str, Any]:
    """The catalogue re-pointed at the loopback fakes, with demo-speed timing."""
    services: dict[str, Any] = {}
    for service in catalogue.services:
        checks: dict[str, Any] = {}
        for check in service.checks:
            params = check.params
            if check.kind == "http":
                checks[check.name] = {"url": str(URL(params.url).with_port(https_port))}
            elif check.kind in ("tcp", "tls"):
                checks[check.name] = {"port": https_port}
            elif check.kind == "dns" and params.mode == "authoritative":
                checks[check.name] = {"nameservers": [f"{LOOPBACK}:{dns_port}"]}
        services[service.name] = {"checks": checks}
    control = services.pop("control")
    control["checks"]["cloudflare"] = {"url": f"https://{LOOPBACK}:{https_port}/"}
    control["checks"]["google"] = {
        "url": f"https://www.example.com:{https_port}/",
        "valid_status_codes": ["<500"],
    }
    control["checks"]["google_h3"] = {
        "url": f"https://www.example.com:{control_h3_port}/",
        "valid_status_codes": ["<500"],
    }
    control["checks"]["cloudflare_h3"] = {"url": f"https://{LOOPBACK}:{control_h3_port}/"}
    return {
        "global": {
            "interval": "2s",
            "recheck_interval": "500ms",
            "timeout": "1500ms",
            "latency_threshold": "300ms",
            "jitter": 0.05,
        },
        "dns": {"resolvers": [f"{LOOPBACK}:{dns_port}"], "timeout": "500ms"},
        "egress": {"allow_networks": ["127.0.0.0/8"]},
        "tls": {"ca_file": str(ca_file)},
        "services": services,
        "control": control,
    }


def demo_feeds(feeds: FeedServer) -> dict[str, Any]:
    """The outside feeds, pointed at the loopback fakes, at demo speed."""
    urls = feeds.urls()
    return {
        "official_status": {"url": urls["official_status"], "interval": "2s"},
        "bgp": {
            "url": urls["bgp"],
            "prefixes": [],
            "min_peers": 3,
            "connect_timeout": "2s",
            "reconnect_max": "5s",
            "seed": {"enabled": True, "url": urls["seed"]},
        },
    }


@dataclass
class FakeMeta:
    dns: DnsServer
    frontend: FrontendServer
    certificates: SniCertificates
    meta_zones: list[str]
    meta_hosts: list[str]
    feeds: FeedServer
    dns_prefixes: tuple[str, ...]
    # HTTP/3: Meta's on the front end's own port, the control targets' on another.
    meta_quic: EdgeServer
    control_quic: EdgeServer

    async def heal(self) -> None:
        self.meta_quic.quic_silent = self.control_quic.quic_silent = False
        self.dns.clear_faults()
        self.frontend.state.clear_faults()
        for host in self.meta_hosts:
            self.certificates.set(host, CertSpec.valid())
        self.feeds.status.reset()
        await self.feeds.ris.update(DEMO_PEERS, announce=self.dns_prefixes)


Step = Callable[[FakeMeta], Awaitable[None] | None]
DEMO_PEERS = peers(10)


async def _dns_outage(meta: FakeMeta) -> None:
    """Most BGP peers withdraw Meta's DNS prefixes, and DNS answers SERVFAIL."""
    await meta.feeds.ris.update(DEMO_PEERS[:8], withdraw=meta.dns_prefixes)
    for zone in meta.meta_zones:
        meta.dns.set_fault(zone, "servfail")


def _login_outage_admitted(meta: FakeMeta) -> None:
    _login_outage(meta)
    meta.feeds.status.set_status("facebook-login", "facebook-login", "Major disruptions")


def _login_outage(meta: FakeMeta) -> None:
    meta.frontend.state.set_fault(Fault(host="www.facebook.com", path="/login/", status=500))
    meta.frontend.state.set_fault(Fault(host="graph.facebook.com", path="/me", status=500))


def _front_ends_5xx(meta: FakeMeta) -> None:
    for host in meta.meta_hosts:
        meta.frontend.state.set_fault(Fault(host=host, status=503))


def _whatsapp_alone(meta: FakeMeta) -> None:
    for zone in ("whatsapp.com", "whatsapp.net"):
        meta.dns.set_fault(zone, "servfail")


def _instagram_slow(meta: FakeMeta) -> None:
    for host in ("www.instagram.com", "i.instagram.com"):
        meta.frontend.state.set_fault(Fault(host=host, delay=0.6))


def _threads_cert_expired(meta: FakeMeta) -> None:
    meta.certificates.set("www.threads.com", CertSpec.expired())


def _meta_quic_down(meta: FakeMeta) -> None:
    meta.meta_quic.quic_silent = True


def _quic_blocked_here(meta: FakeMeta) -> None:
    """UDP 443 dropped on this side: every QUIC handshake, Meta's and the controls', is lost."""
    meta.meta_quic.quic_silent = meta.control_quic.quic_silent = True


def _uplink_down(meta: FakeMeta) -> None:
    """Every control target fails as well: the demo's vantage is 'offline'."""
    meta.dns.set_fault("example.com", "servfail")
    for host in (LOOPBACK, "www.example.com"):
        meta.frontend.state.set_fault(Fault(host=host, status=503))


SCRIPT: tuple[tuple[str, Step], ...] = (
    ("all healthy", lambda meta: None),
    (
        "4 Oct 2021: BGP peers withdraw Meta's DNS prefixes, DNS answers SERVFAIL"
        " (every product down at bgp)",
        _dns_outage,
    ),
    (
        "5 Mar 2024: logins and token checks fail, DNS/TCP/TLS fine (Facebook Login down at http;"
        " Meta's status page admits it)",
        _login_outage_admitted,
    ),
    ("11 Dec 2024: every front end answers 5xx (everything down at http)", _front_ends_5xx),
    ("WhatsApp alone: its zones answer SERVFAIL (WhatsApp down at dns)", _whatsapp_alone),
    ("Instagram slow: 600 ms per answer (degraded, not down)", _instagram_slow),
    ("Threads' certificate expired (Threads down at tls)", _threads_cert_expired),
    (
        "Meta's QUIC edge is silent, TCP fine (the products probed over HTTP/3 degraded at"
        " quic: their apps fall back to TCP)",
        _meta_quic_down,
    ),
    (
        "your network drops UDP 443: every HTTP/3 check fails, the controls' too (nothing"
        " blamed on Meta; the headline says this network blocks QUIC)",
        _quic_blocked_here,
    ),
    (
        "your uplink is down: the control checks fail too (everything unknown, it is us)",
        _uplink_down,
    ),
)


async def start_fake_meta(workdir: Path) -> tuple[FakeMeta, Path]:
    catalogue = loader.load(None)
    hostnames = catalogue_hostnames(catalogue)
    ca = LabCA()
    ca_file = ca.ca_pem_path(workdir)
    meta_hosts = sorted(h for h in hostnames if h not in CONTROL_HOSTS)
    certificates = ca.sni_server(
        {h: CertSpec.valid() for h in sorted(hostnames)}, default_hostnames=(LOOPBACK,)
    )
    dns = DnsServer(demo_zones(hostnames), host=LOOPBACK, port=0)
    await dns.start()
    state = FrontendState()
    # The control targets are served too, so the "uplink down" step can fail them.
    for host in (LOOPBACK, *CONTROL_HOSTS):
        state.hosts[host] = HostSpec("page", title="Example Domain", pages={"/": "home"})
    frontend = FrontendServer(state, certificates.ssl_context, host=LOOPBACK, port=0)
    try:
        await frontend.start()
    except BaseException:
        await dns.close()
        raise
    zones = sorted({apex_of(h) for h in meta_hosts} - {apex_of(h) for h in CONTROL_HOSTS})
    edge_names = [*sorted(hostnames), LOOPBACK]
    meta_quic = EdgeServer(
        ca, edge_names, LOOPBACK, frontend.port, LOOPBACK, frontend.port, tcp=False
    )
    control_quic = EdgeServer(ca, edge_names, LOOPBACK, frontend.port, LOOPBACK, tcp=False)
    started: list[Any] = [frontend, dns]
    try:
        for server in (meta_quic, control_quic):
            await server.start()
            started.insert(0, server)
        feeds = await FeedServer().start(LOOPBACK)
    except BaseException:
        for server in started:
            await server.close()
        raise
    prefixes = tuple(dict.fromkeys(p for s in catalogue.meta_services for p in s.dns_prefixes))
    meta = FakeMeta(
        dns, frontend, certificates, zones, meta_hosts, feeds, prefixes, meta_quic, control_quic
    )
    return meta, ca_file


def demo_config(meta: FakeMeta, ca_file: Path) -> Config:
    overlay = demo_overlay(
        loader.load(None), meta.dns.port, meta.frontend.port, ca_file, meta.control_quic.port
    )
    overlay["feeds"] = demo_feeds(meta.feeds)
    return loader.parse(yaml.safe_dump(overlay), "<demo>")


async def replay(meta: FakeMeta, step_seconds: float) -> None:
    """Cycle through SCRIPT forever, `step_seconds` per outage, healing in between."""
    while True:
        for title, apply in SCRIPT:
            await meta.heal()
            applied = apply(meta)
            if applied is not None:
                await applied
            log.warning("demo: now replaying %s", title)
            await asyncio.sleep(step_seconds)


async def run(
    serve: Callable[[Config, Callable[[], Config], Awaitable[None] | None], Awaitable[int]],
    step_seconds: float,
) -> int:
    """Start the fake Meta, then hand the exporter's config to `serve` (the CLI's server)."""
    with tempfile.TemporaryDirectory(prefix="meta-outage-demo-") as workdir:
        meta, ca_file = await start_fake_meta(Path(workdir))
        try:
            demo = demo_config(meta, ca_file)
            log.info(
                "demo: simulated Meta on %s (DNS :%d, HTTPS :%d); nothing leaves this machine",
                LOOPBACK,
                meta.dns.port,
                meta.frontend.port,
            )
            return await serve(demo, lambda: demo, replay(meta, step_seconds))
        finally:
            await meta.feeds.close()
            await meta.control_quic.close()
            await meta.meta_quic.close()
            await meta.frontend.close()
            await meta.dns.close()
