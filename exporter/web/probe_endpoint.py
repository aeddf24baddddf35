"""/probe?check=NAME[&service=S]: probe one configured check now, blackbox_exporter style.

Only checks of the running config can be probed: the request names a check, never a
target, and any other parameter (target=, module=, ...) is refused with 400 before anything
is sent, so the endpoint cannot be turned into a proxy to arbitrary hosts (SSRF). The probe
goes through the same prober, deadline and egress policy as background probes, and its
result is NOT recorded: the exporter's own verdicts and counters stay the scheduler's.
A token bucket (429 with Retry-After when empty) and a bound on probes in flight keep a
busy or hostile client from turning the exporter into a load generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.engine.runtime import Runtime
from exporter.model import ProbeResult
from exporter.spec import CheckSpec

RATE_PER_SECOND = 2.0
BURST = 10
MAX_IN_FLIGHT = 4
ALLOWED_PARAMS = frozenset({"check", "service"})


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. Pure apart from the clock."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self) -> float:
        """0 when a token was taken; else the seconds until one is there."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


@dataclass
class ProbeEndpoint:
    runtime: Runtime
    bucket: TokenBucket
    max_in_flight: int = MAX_IN_FLIGHT
    in_flight: int = 0


ENDPOINT = web.AppKey("probe_endpoint", ProbeEndpoint)


def find_check(checks: tuple[CheckSpec, ...], name: str, service: str | None) -> CheckSpec | str:
    """The one configured check so named, or why not (pure)."""
    found = [c for c in checks if c.name == name and service in (None, c.service)]
    if not found:
        return f"no configured check {name!r}" + (f" in service {service!r}" if service else "")
    if len(found) > 1:
        services = ", ".join(sorted(c.service for c in found))
        return f"check {name!r} is in several services ({services}): add &service=NAME"
    return found[0]


class _ResultCollector(Collector):
    """blackbox_exporter's probe_* names where the meaning is the same; meta_probe_* for ours."""

    def __init__(self, check: CheckSpec, result: ProbeResult) -> None:
        self.check, self.result = check, result

    def collect(self) -> Iterator[Metric]:
        result = self.result
        yield _gauge("probe_success", "1 if the probe succeeded.", result.success)
        yield _gauge("probe_duration_seconds", "How long the probe took.", result.duration)
        phases = GaugeMetricFamily(
            "meta_probe_phase_duration_seconds",
            "Seconds spent in each phase of this probe.",
            labels=["phase"],
        )
        for phase, seconds in sorted(result.phases.items(), key=lambda kv: kv[0].value):
            phases.add_metric([phase.value], seconds)
        yield phases
        reason = GaugeMetricFamily(
            "meta_probe_reason", "Why the probe failed (ok on success).", labels=["reason", "layer"]
        )
        reason.add_metric([result.reason.value, result.layer.value], 1.0)
        yield reason
        if result.http_status is not None:
            yield _gauge("probe_http_status_code", "HTTP status of the answer.", result.http_status)
        if result.http_version is not None:
            yield _gauge(
                "probe_http_version", "HTTP version the probe spoke.", float(result.http_version)
            )
        if result.tls_expiry is not None:
            yield _gauge(
                "probe_ssl_earliest_cert_expiry",
                "Unix time the peer certificate expires.",
                result.tls_expiry,
            )
        if result.dns_answers is not None:
            yield _gauge(
                "probe_dns_answer_rrs", "Answer records of the asked type.", result.dns_answers
            )
        if result.address_family is not None:
            protocol = 6 if result.address_family == "ipv6" else 4
            yield _gauge("probe_ip_protocol", "IP version the probe used.", protocol)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def render(check: CheckSpec, result: ProbeResult, accept: str) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ResultCollector(check, result))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def _bad_request(message: str) -> web.Response:
    return web.Response(status=400, text=message + "\n")


async def probe(request: web.Request) -> web.Response:
    endpoint = request.app[ENDPOINT]
    unknown = sorted(set(request.query) - ALLOWED_PARAMS)
    if unknown:
        return _bad_request(
            f"unknown parameter(s) {', '.join(unknown)}: only check= and service= "
            "(configured checks only; there is no target=)"
        )
    if len(request.query.getall("check", [])) != 1 or len(request.query.getall("service", [])) > 1:
        return _bad_request("give check=NAME once (and service=NAME at most once)")
    found = find_check(
        endpoint.runtime.config.checks, request.query["check"], request.query.get("service")
    )
    if isinstance(found, str):
        return _bad_request(found)
    wait = endpoint.bucket.take()
    if wait > 0 or endpoint.in_flight >= endpoint.max_in_flight:
        retry = max(1, math.ceil(wait))
        return web.Response(
            status=429,
            text="too many probe requests; retry later\n",
            headers={"Retry-After": str(retry)},
        )
    endpoint.in_flight += 1
    try:
        result = await endpoint.runtime.probe(found)
    finally:
        endpoint.in_flight -= 1
    body, content_type = render(found, result, request.headers.get("Accept", ""))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def setup(app: web.Application, runtime: Runtime) -> None:
    """Add GET /probe to the app, with its own rate limit."""
    app[ENDPOINT] = ProbeEndpoint(runtime, TokenBucket(RATE_PER_SECOND, BURST))
    app.router.add_get("/probe", probe)
