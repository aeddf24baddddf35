"""/probe?check=NAME against the loopback fake Meta: configured checks only, rate-limited.

The app runs without background probing, so every request the front end counts was made
by /probe, and the store shows /probe records nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import loader
from exporter.engine.runtime import Runtime
from exporter.sim.frontend import Fault, FrontendServer
from exporter.web import probe_endpoint
from exporter.web.server import init_app


@pytest.fixture
async def client(config_file: Path) -> AsyncIterator[TestClient]:
    runtime = Runtime(loader.load(str(config_file)))
    app = init_app(runtime, lambda: loader.load(str(config_file)), start_probing=False)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def samples(text: str) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def test_probes_a_configured_check(client: TestClient, frontend: FrontendServer) -> None:
    response = await client.get("/probe", params={"check": "web", "service": "facebook"})
    assert response.status == 200
    values = samples(await response.text())
    assert values["probe_success"] == 1
    assert 0 < values["probe_duration_seconds"] < 5
    assert values["probe_http_status_code"] == 200
    assert values["meta_probe_reason{layer=none,reason=ok}"] == 1
    assert "meta_probe_phase_duration_seconds{phase=tls}" in values
    assert frontend.state.requests["www.facebook.com"] == 1
    runtime = client.app[probe_endpoint.ENDPOINT].runtime
    assert runtime.store.records[("facebook", "web")].probes_total == 0  # not recorded


async def test_failure_reads_like_blackbox(client: TestClient, frontend: FrontendServer) -> None:
    frontend.state.set_fault(Fault(host="www.instagram.com", status=503))
    response = await client.get("/probe?check=web&service=instagram")
    values = samples(await response.text())
    assert values["probe_success"] == 0
    assert values["meta_probe_reason{layer=http,reason=http_status}"] == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "give check=NAME once"),
        ("check=nope", "no configured check 'nope'"),
        ("check=web", "in several services (control, facebook, instagram): add &service=NAME"),
        ("check=web&service=nope", "no configured check 'web' in service 'nope'"),
        ("target=http://169.254.169.254/", "unknown parameter(s) target"),
        ("check=web&service=facebook&target=10.0.0.1", "unknown parameter(s) target"),
        ("check=web&service=facebook&module=http_2xx", "unknown parameter(s) module"),
        ("check=web&check=tls&service=instagram", "give check=NAME once"),
    ],
)
async def test_anything_but_a_configured_check_is_refused_unprobed(
    query: str, message: str, client: TestClient, frontend: FrontendServer
) -> None:
    response = await client.get(f"/probe?{query}")
    assert response.status == 400
    assert message in await response.text()
    assert sum(frontend.state.requests.values()) == 0  # nothing was probed


async def test_rate_limited_with_retry_after(client: TestClient) -> None:
    statuses = []
    for _ in range(probe_endpoint.BURST + 3):
        response = await client.get("/probe?check=chat")
        statuses.append(response.status)
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
    assert statuses[: probe_endpoint.BURST] == [200] * probe_endpoint.BURST
    assert 429 in statuses[probe_endpoint.BURST :]
