"""One benchmark workload, said once and given to both subjects: our exporter's config and
the blackbox_exporter module + target list that do the same probes at the same rate (pure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.servers import BENCH_HOST

# https: HTTP/1.1 (the lean server offers no ALPN); h2 and h3: HTTP/2 and HTTP/3 on the edge
# role (hypercorn). blackbox_exporter 0.23 has no HTTP/3, and the aiohttp-era exporter
# ("before") only HTTP/1.1: the kinds each can probe are in SUBJECTS. The floors
# (bench/floor.py) are the bare exchange with no exporter around it: OpenSSL from C and
# Python's ssl (HTTP/1.1 only), and libcurl.
KINDS = ("https", "h2", "h3", "dns", "tcp")
FLOORS = ("floor_openssl", "floor_ssl", "floor_curl")
SUBJECTS = {
    "https": ("ours", "blackbox", "before", "floor_openssl", "floor_ssl", "floor_curl"),
    "h2": ("ours", "blackbox", "floor_curl"),
    "h3": ("ours", "floor_curl"),
    "dns": ("ours", "blackbox", "before"),
    "tcp": ("ours", "blackbox", "before"),
}
TIMEOUT = "5s"
# Checks are grouped into services of this size, as in the built-in catalogue (2-8 per
# service): each probe result re-judges its own service, so its cost grows with the
# service's size, not with the number of checks in all.
CHECKS_PER_SERVICE = 10


@dataclass(frozen=True, slots=True)
class Targets:
    """Where the bench servers listen (all on loopback)."""

    https_port: int
    tcp_port: int
    dns_host: str
    dns_port: int
    ca_file: str
    edge_port: int = 0  # the edge role: HTTP/2 over TCP, HTTP/3 over UDP, same port


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str  # one of KINDS
    checks: int
    interval: float  # seconds between probes of one check
    delay_ms: int = 0  # https: the server waits this long before answering
    # True: no jitter, every check keeps the phase of its first probe, which our scheduler
    # spreads over 1 s (over N / 100 s past 100 checks); blackbox is asked on the same
    # phases, so each interval starts with up to 100 checks fired within a second.
    burst: bool = False
    max_concurrency: int = 32  # ours; blackbox has no such limit

    @property
    def rate(self) -> float:
        """Probes per second."""
        return self.checks / self.interval

    def label(self) -> str:
        delay = f", {self.delay_ms} ms delay" if self.delay_ms else ""
        return f"{self.checks} {self.kind} checks every {self.interval:g}s{delay}"


def https_url(targets: Targets, workload: Workload, index: int) -> str:
    # Distinct URLs, as distinct checks would have; the server ignores the query.
    port = targets.https_port if workload.kind == "https" else targets.edge_port
    return f"https://{BENCH_HOST}:{port}/d/{workload.delay_ms}?c={index}"


def exporter_check(workload: Workload, targets: Targets, index: int) -> dict[str, Any]:
    if workload.kind == "https":  # no http_version: the "before" exporter has no such key
        return {"kind": "http", "url": https_url(targets, workload, index)}
    if workload.kind in ("h2", "h3"):
        version = workload.kind[1]
        return {"kind": "http", "url": https_url(targets, workload, index), "http_version": version}
    if workload.kind == "dns":
        return {"kind": "dns", "name": BENCH_HOST, "type": "A"}
    if workload.kind == "tcp":
        return {"kind": "tcp", "host": "127.0.0.1", "port": targets.tcp_port}
    raise ValueError(f"unknown workload kind {workload.kind!r}")


def exporter_config(workload: Workload, targets: Targets) -> dict[str, Any]:
    """Our exporter: only the bench checks, loopback only, the bench DNS server, lab CA."""
    return {
        "builtin_catalog": False,
        "global": {
            "interval": workload.interval,
            "recheck_interval": workload.interval,
            "timeout": TIMEOUT,
            "jitter": 0.0 if workload.burst else 0.1,
            "max_concurrency": workload.max_concurrency,
            "ip_family": "ip4",
        },
        "dns": {"resolvers": [f"{targets.dns_host}:{targets.dns_port}"]},
        "egress": {"allow_networks": ["127.0.0.0/8"]},
        "tls": {"ca_file": targets.ca_file},
        "services": {
            f"s{first // CHECKS_PER_SERVICE:04d}": {
                "checks": {
                    f"c{i:05d}": exporter_check(workload, targets, i)
                    for i in range(first, min(first + CHECKS_PER_SERVICE, workload.checks))
                }
            }
            for first in range(0, workload.checks, CHECKS_PER_SERVICE)
        },
    }


def blackbox_modules(ca_file: str) -> dict[str, Any]:
    """The same probes as blackbox_exporter modules: one A lookup (no AAAA fallback, as our
    ip_family ip4), a verified TLS handshake, GET, 2xx; DNS needs an answer, as ours."""
    ip4 = {"preferred_ip_protocol": "ip4", "ip_protocol_fallback": False}
    return {
        "modules": {
            "http_2xx": {
                "prober": "http",
                "timeout": TIMEOUT,
                "http": {**ip4, "tls_config": {"ca_file": ca_file}},
            },
            "http_2xx_h2": {
                "prober": "http",
                "timeout": TIMEOUT,
                "http": {**ip4, "tls_config": {"ca_file": ca_file}, "enable_http2": True},
            },
            "dns_a": {
                "prober": "dns",
                "timeout": TIMEOUT,
                "dns": {
                    **ip4,
                    "query_name": BENCH_HOST,
                    "query_type": "A",
                    "transport_protocol": "udp",
                    "validate_answer_rrs": {"fail_if_none_matches_regexp": [".*"]},
                },
            },
            "tcp_connect": {"prober": "tcp", "timeout": TIMEOUT, "tcp": ip4},
        }
    }


def blackbox_jobs(workload: Workload, targets: Targets) -> list[tuple[str, str]]:
    """(module, target) per check, in check order."""
    if workload.kind == "https":
        return [("http_2xx", https_url(targets, workload, i)) for i in range(workload.checks)]
    if workload.kind == "h2":
        return [("http_2xx_h2", https_url(targets, workload, i)) for i in range(workload.checks)]
    if workload.kind == "dns":
        return [("dns_a", f"{targets.dns_host}:{targets.dns_port}")] * workload.checks
    if workload.kind == "tcp":
        return [("tcp_connect", f"127.0.0.1:{targets.tcp_port}")] * workload.checks
    raise ValueError(f"unknown workload kind {workload.kind!r}")
