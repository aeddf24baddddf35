"""The outage lab: a fake Meta edge, a control internet and a vantage, in network namespaces.

    host ── mgmt veths ── vantage(s) ── router ──┬── meta  (authoritative DNS, HTTPS front ends, chat port)
     (scrapes the exporters)       (faults here)  └── net   (recursive resolver, control targets)

Meta's prefixes are stood in for by private ones inside the lab (never Meta's real
addresses): 10.129.30.0/23 and 10.185.218.0/23 hold the authoritative nameservers (as
129.134.30.0/23 and 185.89.218.0/23 do), 10.157.240.0/24 the web front ends, 10.31.0.0/16
WhatsApp. The recursive resolver in `net` really recurses to the lab's nameservers and caches
by TTL, so a withdrawn nameserver prefix turns into SERVFAIL when the cache expires, as on
4 Oct 2021. Faults: routes and nftables on the router, link state on the vantage, and the
sim nodes' control APIs (DNS, HTTP, certificates, the chat port).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.config.loader import load as load_config
from exporter.config.loader import merge

from . import netns

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
STATE_GLOB = "mox-lab-*"
EXPORTER_PORT = 10094

# -- addresses --------------------------------------------------------------------------

PREFIXES = {
    "meta-dns-a": "10.129.30.0/23",  # a.ns / b.ns.facebook.com (real: 129.134.30.0/23)
    "meta-dns-b": "10.185.218.0/23",  # c.ns / d.ns.facebook.com (real: 185.89.218.0/23)
    "meta-edge": "10.157.240.0/24",  # web front ends (real: 157.240.0.0/16)
    "whatsapp": "10.31.0.0/16",  # WhatsApp's edge (real: 31.13.64.0/18 ...)
}
CONTROL_PREFIX = "10.1.0.0/16"
META_DNS_PREFIXES = ("meta-dns-a", "meta-dns-b")

NAMESERVERS = {"a": "10.129.30.12", "b": "10.129.31.12", "c": "10.185.218.12", "d": "10.185.219.12"}
# a-d.ns.whatsapp.net answer from Meta's nameserver prefixes too: on 4 Oct 2021 WhatsApp
# went dark with everything else.
WHATSAPP_NAMESERVERS = NAMESERVERS
EDGE = {
    "facebook": "10.157.240.35",
    "graph": "10.157.240.10",
    "cdn": "10.157.240.36",
    "edge_chat": "10.157.240.37",
    "messenger": "10.157.240.20",
    "threads": "10.157.240.50",
    "instagram": "10.157.240.174",
    "whatsapp_chat": "10.31.13.60",
    "whatsapp_web": "10.31.13.61",
    "whatsapp_media": "10.31.13.62",
}
RESOLVER = "10.1.1.53"
CONTROL_NS = "10.1.2.53"
CONTROL_WEB_IP = "10.1.3.10"
CONTROL_WEB = "10.1.3.11"
# The outside feeds (Meta's status page, RIS Live, RIPEstat) stand in the control internet.
FEEDS = "10.1.4.10"
FEEDS_PORT = 80
# RIS peers of the replays; heal() has them all announce Meta's DNS prefixes.
BGP_PEERS = [f"198.51.100.{n}" for n in range(1, 11)]

# Short TTLs so the 2021 replay's caches expire within seconds.
TTL = 4


def _a(address: str) -> list[list[Any]]:
    return [["A", TTL, address]]


def meta_zones() -> dict[str, dict[str, list[list[Any]]]]:
    ns_records = [["NS", 172800, f"{n}.ns.facebook.com."] for n in NAMESERVERS]
    soa = ["SOA", 3600, "a.ns.facebook.com. dns.facebook.com. 1 14400 1800 604800 60"]
    facebook = {
        "@": [*ns_records, soa, *_a(EDGE["facebook"])],
        "www": [["CNAME", TTL, "star-mini.c10r.facebook.com."]],
        "star-mini.c10r": _a(EDGE["facebook"]),
        "m": _a(EDGE["facebook"]),
        "graph": _a(EDGE["graph"]),
        "edge-chat": _a(EDGE["edge_chat"]),
        "adsmanager": _a(EDGE["facebook"]),
        "business": _a(EDGE["facebook"]),
        **{f"{n}.ns": [["A", 172800, ip]] for n, ip in NAMESERVERS.items()},
    }

    def simple(apex: str, hosts: dict[str, str]) -> dict[str, list[list[Any]]]:
        zone: dict[str, list[list[Any]]] = {"@": [*ns_records, soa.copy()]}
        zone["@"][-1] = ["SOA", 3600, f"a.ns.facebook.com. dns.{apex}. 1 14400 1800 604800 60"]
        for host, address in hosts.items():
            zone.setdefault(host, []).extend(_a(address))
        return zone

    return {
        "facebook.com": facebook,
        "instagram.com": simple(
            "instagram.com",
            {
                "@": EDGE["instagram"],
                "www": EDGE["instagram"],
                "i": EDGE["instagram"],
                "graph": EDGE["instagram"],
                **{f"{n}.ns": ip for n, ip in NAMESERVERS.items()},
            },
        ),
        "messenger.com": simple(
            "messenger.com", {"@": EDGE["messenger"], "www": EDGE["messenger"]}
        ),
        "threads.com": simple("threads.com", {"@": EDGE["threads"], "www": EDGE["threads"]}),
        "threads.net": simple("threads.net", {"@": EDGE["threads"], "www": EDGE["threads"]}),
        "fbcdn.net": simple("fbcdn.net", {"static.xx": EDGE["cdn"]}),
    }


def whatsapp_zones() -> dict[str, dict[str, list[list[Any]]]]:
    ns_records = [["NS", 172800, f"{n}.ns.whatsapp.net."] for n in WHATSAPP_NAMESERVERS]

    def soa(apex: str) -> list[Any]:
        return ["SOA", 3600, f"a.ns.whatsapp.net. dns.{apex}. 1 14400 1800 604800 60"]

    return {
        "whatsapp.com": {
            "@": [*ns_records, soa("whatsapp.com"), *_a(EDGE["whatsapp_web"])],
            "www": _a(EDGE["whatsapp_web"]),
            "web": _a(EDGE["whatsapp_web"]),
        },
        "whatsapp.net": {
            "@": [*ns_records, soa("whatsapp.net")],
            "g": _a(EDGE["whatsapp_chat"]),
            "mmg": _a(EDGE["whatsapp_media"]),
            **{f"{n}.ns": [["A", 172800, ip]] for n, ip in WHATSAPP_NAMESERVERS.items()},
        },
    }


def control_zones() -> dict[str, dict[str, list[list[Any]]]]:
    return {
        "example.com": {
            "@": [
                ["SOA", 3600, "ns.example.com. dns.example.com. 1 7200 900 604800 60"],
                *_a(CONTROL_WEB),
            ],
            "www": _a(CONTROL_WEB),
        }
    }


META_HOSTNAMES = [
    "facebook.com",
    "*.facebook.com",
    "star-mini.c10r.facebook.com",
    "instagram.com",
    "*.instagram.com",
    "messenger.com",
    "www.messenger.com",
    "threads.com",
    "www.threads.com",
    "threads.net",
    "www.threads.net",
    "static.xx.fbcdn.net",
    "whatsapp.com",
    "*.whatsapp.com",
    "*.whatsapp.net",
]


def _listen(addresses: list[str], port: int) -> list[str]:
    return [f"{a}:{port}" for a in addresses]


def meta_node_spec(run_dir: Path) -> dict[str, Any]:
    edge = sorted({ip for ip in EDGE.values()})
    return {
        "control_socket": str(run_dir / "meta.sock"),
        "ca_dir": str(run_dir / "ca"),
        "dns": [
            {
                "listen": _listen(list(NAMESERVERS.values()), 53),
                "zones": {**meta_zones(), **whatsapp_zones()},
            }
        ],
        "https": [{"listen": _listen(edge, 443), "hostnames": META_HOSTNAMES, "http3": True}],
        "tcp": [{"listen": [f"{EDGE['whatsapp_chat']}:5222"], "name": "whatsapp-chat"}],
    }


def net_node_spec(run_dir: Path) -> dict[str, Any]:
    meta_ns = [f"{ip}:53" for ip in NAMESERVERS.values()]
    wa_ns = [f"{ip}:53" for ip in WHATSAPP_NAMESERVERS.values()]
    stubs = {zone: meta_ns for zone in meta_zones()}
    stubs.update({zone: wa_ns for zone in whatsapp_zones()})
    stubs["example.com"] = [f"{CONTROL_NS}:53"]
    return {
        "control_socket": str(run_dir / "net.sock"),
        "ca_dir": str(run_dir / "ca"),
        "recursors": [{"listen": [f"{RESOLVER}:53"], "stubs": stubs, "upstream_timeout": 0.3}],
        "dns": [{"listen": [f"{CONTROL_NS}:53"], "zones": control_zones()}],
        "https": [
            {
                "listen": _listen([CONTROL_WEB_IP, CONTROL_WEB], 443),
                "hostnames": [CONTROL_WEB_IP, "www.example.com", "example.com"],
                "http3": True,
            }
        ],
    }


@dataclass(frozen=True)
class LabSettings:
    """The exporter's timing in the lab: fast, so scenarios finish in seconds."""

    interval: float = 2.0
    jitter: float = 0.05
    recheck_interval: float = 0.5
    timeout: float = 1.5  # above the 1 s SYN retransmit: one lost packet is not a failed probe
    latency_threshold: float = 0.25
    dns_attempt: float = 0.25
    # False: the catalogue's HTTP/3 checks (Meta's and the controls') are disabled. The
    # shipped-timing transitions (a)-(e) run so: six labs of three vantages on two cores are
    # at capacity when every exporter re-probes at once on recovery and the alerting stacks
    # start, and an HTTP/3 probe costs about twice an HTTP/1.1 one (client and simulated
    # edge: 11.7 against 5.7 CPU-ms). With them, the labs' simulated Meta answered late at
    # every layer (DNS and TLS timeouts too), which the exporters rightly reported.
    http3: bool = True

    @property
    def detection_bound(self) -> float:
        """The issue's budget: one interval (with jitter) + re-check + 1 s."""
        return self.interval * (1 + self.jitter) + self.recheck_interval + 1.0

    @classmethod
    def shipped(cls) -> LabSettings:
        """The built-in catalogue's own timing (read from it, not copied)."""
        catalogue = load_config(None)
        check = catalogue.meta_services[0].checks[0]
        return cls(
            interval=check.interval,
            jitter=catalogue.settings.jitter,
            recheck_interval=check.recheck_interval,
            timeout=check.timeout,
            latency_threshold=check.latency_threshold,
            dns_attempt=catalogue.dns_timeout,
        )


# The shipped defaults (15 s interval, 2 s re-check, 5 s timeout ...): the transition scenarios.
SHIPPED = LabSettings.shipped()


def exporter_config(ca_file: Path, settings: LabSettings) -> dict[str, Any]:
    """The built-in catalogue, re-pointed at the lab (only what differs is overridden)."""
    auth = {"auth_dns": {"nameservers": list(NAMESERVERS.values())}}
    dns_prefixes = [PREFIXES[name] for name in META_DNS_PREFIXES]
    services: dict[str, Any] = {
        s.name: {"dns_prefixes": dns_prefixes} for s in load_config(None).meta_services
    }
    services["facebook"]["checks"] = dict(auth)
    services["instagram"]["checks"] = dict(auth)
    control: dict[str, Any] = {
        "cloudflare": {"url": f"https://{CONTROL_WEB_IP}/"},
        "google": {"url": "https://www.example.com/", "valid_status_codes": ["<500"]},
        "google_h3": {"url": "https://www.example.com/", "valid_status_codes": ["<500"]},
        "cloudflare_h3": {"url": f"https://{CONTROL_WEB_IP}/"},
    }
    if not settings.http3:
        catalogue = load_config(None)
        for service in catalogue.services:
            for check in service.checks:
                if check.over_quic:
                    where = (
                        control
                        if service.is_control
                        else services[service.name].setdefault("checks", {})
                    )
                    where[check.name] = {"enabled": False}
    feeds = f"{FEEDS}:{FEEDS_PORT}"
    return {
        "global": {
            "interval": f"{settings.interval}s",
            "jitter": settings.jitter,
            "recheck_interval": f"{settings.recheck_interval}s",
            "timeout": f"{settings.timeout}s",
            "latency_threshold": f"{settings.latency_threshold}s",
        },
        "dns": {"resolvers": [RESOLVER], "timeout": f"{settings.dns_attempt}s"},
        "egress": {"allow_networks": [*PREFIXES.values(), CONTROL_PREFIX]},
        "tls": {"ca_file": str(ca_file)},
        "services": services,
        "feeds": {
            "official_status": {"url": f"http://{feeds}/data/orgs.json", "interval": "1s"},
            "bgp": {
                "url": f"ws://{feeds}/v1/ws/?client=lab",
                "prefixes": [],
                "min_peers": 3,
                "connect_timeout": "2s",
                "reconnect_max": "2s",
                "seed": {"enabled": True, "url": f"http://{feeds}/data/looking-glass/data.json"},
            },
        },
        "control": {"checks": control},
    }


# -- control clients ----------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def node_call(socket_path: str, method: str, path: str, body: Any = None) -> Any:
    """Call a sim node's control API over its unix socket (it crosses namespaces)."""
    connection = _UnixHTTPConnection(socket_path)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read().decode()
        if response.status >= 400:
            raise netns.LabError(f"{method} {path} on {socket_path}: {response.status} {text}")
        return json.loads(text) if text else None
    finally:
        connection.close()


# -- the lab --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vantage:
    """One vantage: its namespace, uplink to the router, management link to the host."""

    index: int  # 0, 1, 2 ...
    run_id: str
    mgmt_net: int

    @property
    def name(self) -> str:
        return "vantage" if self.index == 0 else f"vantage{self.index + 1}"

    @property
    def ns(self) -> str:
        return f"mox{self.run_id}-{self.name}"

    def dev(self, role: str) -> str:
        return f"mx{self.run_id}{role}{self.index}"  # <= 15 characters

    @property
    def uplink_subnet(self) -> str:
        return f"10.200.{10 + self.index}.0/30"

    @property
    def router_side(self) -> str:
        return f"10.200.{10 + self.index}.1"

    @property
    def uplink_address(self) -> str:
        return f"10.200.{10 + self.index}.2"

    @property
    def mgmt_host(self) -> str:
        return f"10.203.{self.mgmt_net}.{4 * self.index + 1}"

    @property
    def mgmt_vantage(self) -> str:
        return f"10.203.{self.mgmt_net}.{4 * self.index + 2}"

    @property
    def exporter_url(self) -> str:
        return f"http://{self.mgmt_vantage}:{EXPORTER_PORT}"

    @property
    def exporter(self) -> str:
        """The exporter's process name in the lab."""
        return f"exporter-{self.name}"


@dataclass
class Lab:
    run_id: str = field(default_factory=lambda: f"{random.randrange(16**4):04x}")
    settings: LabSettings = field(default_factory=LabSettings)
    vantage_count: int = 1
    run_dir: Path = field(init=False)
    vantages: list[Vantage] = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    mgmt_net: int = field(default_factory=lambda: _free_mgmt_net())
    # Active packet faults on the router: key -> nft rule.
    _filters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = Path(tempfile.gettempdir()) / f"mox-lab-{self.run_id}"
        self.vantages = [Vantage(i, self.run_id, self.mgmt_net) for i in range(self.vantage_count)]

    # names
    def ns(self, role: str) -> str:
        return f"mox{self.run_id}-{role}"

    def dev(self, role: str) -> str:
        return f"mx{self.run_id}{role}"  # <= 15 characters

    @property
    def exporter_url(self) -> str:
        return self.vantages[0].exporter_url

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "ca" / "lab-ca.pem"

    # -- setup --------------------------------------------------------------------------

    def up(self, *, start_exporter: bool = True) -> Lab:
        """Build everything; on any failure, tear down what was built and re-raise."""
        while True:  # never adopt (and later tear down) another lab's run dir
            try:
                self.run_dir.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                self.run_id = f"{random.randrange(16**4):04x}"
                self.__post_init__()
        try:
            self._save_state()
            self._build_network()
            self._start_nodes()
            if start_exporter:
                self.start_exporter()
        except BaseException:
            self.down()
            raise
        return self

    def _save_state(self) -> None:
        """Claim a management net no other lab holds (labs may be built at once: one per
        pytest-xdist worker), and record what teardown must remove, under one lock."""
        with open(Path(tempfile.gettempdir()) / "mox-lab.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.mgmt_net = _free_mgmt_net(claimed=_claimed_mgmt_nets())
            self.vantages = [
                Vantage(i, self.run_id, self.mgmt_net) for i in range(self.vantage_count)
            ]
            self._write_state()

    def _write_state(self) -> None:
        state = {
            "run_id": self.run_id,
            "mgmt_net": self.mgmt_net,
            "namespaces": [
                *(v.ns for v in self.vantages),
                *(self.ns(r) for r in ("router", "meta", "net")),
            ],
            "host_devices": [v.dev("h") for v in self.vantages],
        }
        (self.run_dir / "state.json").write_text(json.dumps(state))

    def _build_network(self) -> None:
        router, meta, net = (self.ns(r) for r in ("router", "meta", "net"))
        for name in (router, meta, net):
            netns.add_namespace(name)
        netns.sysctl(router, "net.ipv4.ip_forward", "1")
        # router <-> meta, router <-> net
        netns.veth(router, self.dev("r1"), meta, self.dev("e"))
        netns.address(router, self.dev("r1"), "10.200.1.1/30")
        netns.address(meta, self.dev("e"), "10.200.1.2/30")
        netns.veth(router, self.dev("r2"), net, self.dev("n"))
        netns.address(router, self.dev("r2"), "10.200.2.1/30")
        netns.address(net, self.dev("n"), "10.200.2.2/30")
        for vantage in self.vantages:
            self._build_vantage(vantage)
        # service addresses
        meta_ips = [*NAMESERVERS.values(), *EDGE.values()]
        netns.service_addresses(meta, [f"{ip}/32" for ip in meta_ips])
        control_ips = (RESOLVER, CONTROL_NS, CONTROL_WEB_IP, CONTROL_WEB, FEEDS)
        netns.service_addresses(net, [f"{ip}/32" for ip in control_ips])
        # routes
        netns.route(meta, "default", "via", "10.200.1.1")
        netns.route(net, "default", "via", "10.200.2.1")
        for prefix in PREFIXES.values():
            netns.route(router, prefix, "via", "10.200.1.2")
        netns.route(router, CONTROL_PREFIX, "via", "10.200.2.2")
        self.apply_filters()

    def _build_vantage(self, vantage: Vantage) -> None:
        router = self.ns("router")
        netns.add_namespace(vantage.ns)
        # vantage <-> router: the vantage's uplink
        netns.veth(vantage.ns, vantage.dev("v"), router, vantage.dev("u"))
        netns.address(vantage.ns, vantage.dev("v"), f"{vantage.uplink_address}/30")
        netns.address(router, vantage.dev("u"), f"{vantage.router_side}/30")
        # host <-> vantage management link: scrapes only, never a route for probes
        netns.veth(vantage.ns, vantage.dev("m"), None, vantage.dev("h"))
        netns.address(vantage.ns, vantage.dev("m"), f"{vantage.mgmt_vantage}/30")
        netns.address(None, vantage.dev("h"), f"{vantage.mgmt_host}/30")
        netns.route(vantage.ns, "default", "via", vantage.router_side)

    def _start_nodes(self) -> None:
        from exporter.sim.certs import LabCA

        LabCA().save(self.run_dir / "ca")  # one CA for both nodes and the exporter's bundle
        for role, spec in (
            ("meta", meta_node_spec(self.run_dir)),
            ("net", net_node_spec(self.run_dir)),
        ):
            path = self.run_dir / f"{role}.json"
            path.write_text(json.dumps(spec, indent=1))
            self._spawn(
                role,
                self.ns(role),
                [sys.executable, "-m", "exporter.sim", "node", "--spec", str(path)],
                wait_for_ready_line=True,
            )
        feeds = ["--listen", f"{FEEDS}:{FEEDS_PORT}", "--control", str(self.run_dir / "feeds.sock")]
        self._spawn(
            "feeds",
            self.ns("net"),
            [sys.executable, "-m", "exporter.sim", "feeds", *feeds],
            wait_for_ready_line=True,
        )

    def _spawn(
        self, name: str, namespace: str, argv: list[str], *, wait_for_ready_line: bool = False
    ) -> None:
        with open(self.run_dir / f"{name}.log", "wb") as log_file:  # the child keeps its own fd
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *argv],
                stdout=subprocess.PIPE if wait_for_ready_line else log_file,
                stderr=log_file,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        self.processes[name] = process
        if wait_for_ready_line:
            assert process.stdout is not None
            line = _readline_with_timeout(process, 20.0)
            if '"ready": true' not in line:
                raise netns.LabError(
                    f"{name} node did not start: {line!r}; see {self.run_dir / (name + '.log')}"
                )

    def start_exporter(self, extra_config: dict[str, Any] | None = None) -> None:
        """One exporter per vantage, each its own process started through the CLI."""
        config = exporter_config(self.ca_file, self.settings)
        if extra_config:
            config = merge(config, extra_config)
        path = self.run_dir / "exporter.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        for vantage in self.vantages:
            argv = [
                sys.executable,
                "-m",
                "exporter",
                "run",
                "--config.file",
                str(path),
                "--web.listen-address",
                f"{vantage.mgmt_vantage}:{EXPORTER_PORT}",
            ]
            self._spawn(vantage.exporter, vantage.ns, argv)
        for vantage in self.vantages:
            self._wait_healthy(vantage)

    def _wait_healthy(self, vantage: Vantage) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{vantage.exporter_url}/-/healthy", timeout=1) as reply,
            ):
                if reply.status == 200:
                    return
            if self.processes[vantage.exporter].poll() is not None:
                break
            time.sleep(0.1)
        raise netns.LabError(
            f"exporter did not come up; see {self.run_dir / (vantage.exporter + '.log')}"
        )

    # -- teardown -------------------------------------------------------------------------

    def down(self) -> None:
        """Idempotent: stop our processes, delete our namespaces and host link, remove the run dir."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()
        self.processes.clear()
        teardown_run(self.run_dir)

    # -- faults ---------------------------------------------------------------------------

    def withdraw(self, *prefixes: str) -> None:
        """As in a BGP withdrawal: the router loses its route, answers 'net unreachable'."""
        for name in prefixes:
            netns.delete_route(self.ns("router"), PREFIXES[name])

    def restore(self, *prefixes: str) -> None:
        for name in prefixes:
            netns.route(self.ns("router"), PREFIXES[name], "via", "10.200.1.2")

    def blackhole(self, *prefixes: str) -> None:
        for name in prefixes:
            netns.route(self.ns("router"), "blackhole", PREFIXES[name])

    def apply_filters(self) -> None:
        """Render the router's nft table from the active packet faults, atomically."""
        rules = "\n".join(f"    {rule}" for rule in self._filters.values())
        script = (
            f"table inet lab\ndelete table inet lab\ntable inet lab {{\n"
            f"  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{rules}\n  }}\n}}\n"
        )
        netns.nft(self.ns("router"), script)

    def drop(self, name: str) -> None:
        self._filters[f"drop:{name}"] = f"ip daddr {PREFIXES[name]} drop"
        self.apply_filters()

    def reset_tcp(self, name: str) -> None:
        self._filters[f"rst:{name}"] = (
            f"ip daddr {PREFIXES[name]} meta l4proto tcp reject with tcp reset"
        )
        self.apply_filters()

    def loss(self, percent: int) -> None:
        """Random loss on every forwarded packet, both directions (no netem here: nft numgen)."""
        self._filters["loss"] = f"numgen random mod 100 < {percent} drop"
        self.apply_filters()

    def clear_filters(self) -> None:
        self._filters.clear()
        self.apply_filters()

    def silent_uplink(self, silent: bool, *vantages: int) -> None:
        """The vantages' uplinks drop everything, both ways, with no ICMP (all vantages if
        none is named): probes time out, as when an ISP fails silently. A blackhole route
        or a drop in the vantage's own output hook would fail its sockets at once instead."""
        for index in vantages or range(len(self.vantages)):
            subnet = self.vantages[index].uplink_subnet
            self._set_filter(f"silent:{index}:out", f"ip saddr {subnet} drop", silent)
            self._set_filter(f"silent:{index}:in", f"ip daddr {subnet} drop", silent)
        self.apply_filters()

    def silent_host(self, address: str, silent: bool, *vantages: int) -> None:
        """One address (e.g. the resolver) silently unreachable from these vantages (all if
        none is named), the uplink otherwise fine."""
        for index in vantages or range(len(self.vantages)):
            subnet = self.vantages[index].uplink_subnet
            key = f"host:{address}:{index}"
            self._set_filter(f"{key}:out", f"ip saddr {subnet} ip daddr {address} drop", silent)
            self._set_filter(f"{key}:in", f"ip saddr {address} ip daddr {subnet} drop", silent)
        self.apply_filters()

    def block_quic(self, blocked: bool, *vantages: int) -> None:
        """UDP 443 from these vantages (all if none is named) dropped silently, TCP untouched:
        an office firewall that blocks QUIC, as browsers meet it."""
        for index in vantages or range(len(self.vantages)):
            subnet = self.vantages[index].uplink_subnet
            self._set_filter(f"quic:{index}", f"ip saddr {subnet} udp dport 443 drop", blocked)
        self.apply_filters()

    def quic_edge_down(self, down: bool) -> None:
        """Meta's QUIC edge silent (UDP 443 to every front end dropped), TCP untouched."""
        edges = f"{{ {PREFIXES['meta-edge']}, {PREFIXES['whatsapp']} }}"
        self._set_filter("quic:meta", f"ip daddr {edges} udp dport 443 drop", down)
        self.apply_filters()

    def quic_delay(self, seconds: float) -> None:
        """Every QUIC datagram reaching Meta's edge held `seconds`: a slow QUIC handshake."""
        self.meta_node("PUT", "/quic", {"delay": seconds})

    def _set_filter(self, key: str, rule: str, on: bool) -> None:
        if on:
            self._filters[key] = rule
        else:
            self._filters.pop(key, None)

    def uplink(self, up: bool, vantage: int = 0) -> None:
        """The vantage's own link to the world (index into vantages)."""
        chosen = self.vantages[vantage]
        netns.link_state(chosen.ns, chosen.dev("v"), up)
        if up:  # a downed link loses its routes
            netns.route(chosen.ns, "default", "via", chosen.router_side)

    def cut_meta_for(self, *vantages: int) -> None:
        """Meta unreachable (TCP RST, ICMP unreachable) from these vantages only."""
        meta = ", ".join(PREFIXES.values())
        for index in vantages:
            source = self.vantages[index].uplink_subnet
            self._filters[f"cut:{index}"] = f"ip saddr {source} ip daddr {{ {meta} }} reject"
        self.apply_filters()

    def meta_node(self, method: str, path: str, body: Any = None) -> Any:
        return node_call(str(self.run_dir / "meta.sock"), method, path, body)

    def net_node(self, method: str, path: str, body: Any = None) -> Any:
        return node_call(str(self.run_dir / "net.sock"), method, path, body)

    def feeds(self, method: str, path: str, body: Any = None) -> Any:
        return node_call(str(self.run_dir / "feeds.sock"), method, path, body)

    def bgp(
        self, peers: list[str], *, announce: tuple[str, ...] = (), withdraw: tuple[str, ...] = ()
    ) -> None:
        """RIS Live: these peers announce / withdraw these lab prefixes (names of PREFIXES)."""
        body: dict[str, Any] = {"peers": peers}
        if announce:
            body["announce"] = [PREFIXES[name] for name in announce]
        if withdraw:
            body["withdraw"] = [PREFIXES[name] for name in withdraw]
        self.feeds("POST", "/bgp/update", body)

    def official_status(self, org: str, status: str) -> None:
        """Meta's status page: set the org's (single) component's status string."""
        self.feeds("PUT", "/status", {"org": org, "component": org, "status": status})

    def dns_fault(self, zone: str, fault: str | None) -> None:
        self.meta_node("PUT", "/dns/faults", {"zone": zone, "fault": fault})

    def http_fault(self, **fault: Any) -> None:
        self.meta_node("PUT", "/http/faults", fault)

    def cert(self, hostname: str, condition: str, days: int | None = None) -> None:
        body: dict[str, Any] = {"hostname": hostname, "condition": condition}
        if days is not None:
            body["days"] = days
        self.meta_node("PUT", "/certs", body)

    def chat_port(self, mode: str) -> None:
        self.meta_node("PUT", "/tcp/mode", {"name": "whatsapp-chat", "mode": mode})

    def heal(self) -> None:
        """Every fault off: routes, filters, link, node faults, resolver cache."""
        self.restore(*PREFIXES)
        self.clear_filters()
        for index in range(len(self.vantages)):
            self.uplink(True, index)
        self.meta_node("POST", "/reset")
        self.net_node("POST", "/reset")
        self.feeds("POST", "/reset")
        self.bgp(BGP_PEERS, announce=META_DNS_PREFIXES)

    # -- reading the exporter ---------------------------------------------------------------

    def status(self, vantage: int = 0) -> dict[str, Any]:
        url = f"{self.vantages[vantage].exporter_url}/api/v1/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def metrics(self, vantage: int = 0) -> str:
        url = f"{self.vantages[vantage].exporter_url}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()


def _free_mgmt_net(claimed: frozenset[int] = frozenset()) -> int:
    """A 10.203.N.0/24 the host does not use yet, nor another lab has claimed."""
    used = netns.sh("ip", "-4", "-o", "addr", "show", "to", "10.203.0.0/16", check=False).stdout
    taken = {int(part.split(".")[2]) for part in used.split() if part.startswith("10.203.")}
    free = [n for n in range(256) if n not in taken | claimed]
    return random.choice(free)


def _claimed_mgmt_nets() -> frozenset[int]:
    """The management nets recorded by the labs whose run dirs exist (built or building)."""
    claimed = set()
    for run_dir in leftover_runs():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            claimed.add(int(json.loads((run_dir / "state.json").read_text())["mgmt_net"]))
    return frozenset(claimed)


def _readline_with_timeout(process: subprocess.Popen[bytes], timeout: float) -> str:
    import selectors

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        return f"<no ready line within {timeout}s>"
    return process.stdout.readline().decode()


def teardown_run(run_dir: Path) -> None:
    """Remove one run's namespaces (killing what runs in them), host link and files."""
    state_file = run_dir / "state.json"
    if not state_file.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    state = json.loads(state_file.read_text())
    for name in state["namespaces"]:
        netns.delete_namespace(name)
        # `ip netns exec` config that a harness may add (bench/time_to_page.py's resolv.conf):
        # `ip netns delete` leaves it, and a run killed midway never removed it itself.
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    for device in state["host_devices"]:
        netns.sh("ip", "link", "delete", device, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)


def leftover_runs() -> Iterator[Path]:
    yield from Path(tempfile.gettempdir()).glob(STATE_GLOB)
