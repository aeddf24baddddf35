"""The exporter's HTTP API against the loopback fake Meta: /metrics vs the docs, status, ready, reload."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import loader
from exporter.engine.runtime import Runtime
from exporter.model import Status
from exporter.sim.frontend import Fault, FrontendServer
from exporter.web.server import RUNTIME, init_app

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def reference_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, labels) from docs/metrics.md's "Metrics reference" table."""
    rows = re.findall(
        r"^\| `(meta_[a-z_]+)` \| (\w+) \|([^|]*)\|", METRICS_DOC.read_text(), re.MULTILINE
    )
    assert len(rows) > 20, f"metrics reference table not found in {METRICS_DOC}"
    return {name: (kind, frozenset(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(config_file: Path) -> AsyncIterator[TestClient]:
    runtime = Runtime(loader.load(str(config_file)))
    app = init_app(runtime, lambda: loader.load(str(config_file)))
    async with TestClient(TestServer(app)) as test_client:
        await wait_for(runtime.store.all_ran)
        yield test_client


def totals(family: object) -> dict[tuple[str, str], float]:
    return {(s.labels["service"], s.labels["check"]): s.value for s in family.samples}  # type: ignore[attr-defined]


async def scrape(client: TestClient) -> dict[str, object]:
    response = await client.get("/metrics")
    assert response.status == 200
    return {f.name: f for f in text_string_to_metric_families(await response.text())}


async def test_metrics_match_the_reference(client: TestClient, frontend: FrontendServer) -> None:
    # One failing check so that failure counters exist too.
    frontend.state.set_fault(Fault(host="www.instagram.com", status=503))
    runtime = client.app[RUNTIME]
    # Degraded once confirmed and vouched for by the control checks run after it.
    await wait_for(lambda: runtime.services["instagram"].status is Status.DEGRADED)
    families = await scrape(client)
    reference = reference_metrics()
    exposed = {name: f for name, f in families.items() if name.startswith("meta_")}
    # The parser names counters without _total and info metrics without _info.
    aliases = {
        "meta_probes": "meta_probes_total",
        "meta_probe_failures": "meta_probe_failures_total",
        "meta_probes_judged": "meta_probes_judged_total",
        "meta_probe_judged_failures": "meta_probe_judged_failures_total",
        "meta_exporter_build": "meta_exporter_build_info",
    }
    seen = set()
    for name, family in exposed.items():
        documented = aliases.get(name, name)
        assert documented in reference, f"{documented} is exposed but not in docs/metrics.md"
        kind, labels = reference[documented]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
        seen.add(documented)
    # The feeds' metrics need the fake feeds (tests/integration/test_feeds.py holds them to
    # docs/metrics.md), the web config's a --web.config.file (test_web_config_reload.py).
    feed_metrics = {
        n
        for n in reference
        if n.startswith(("meta_feed_", "meta_official_", "meta_bgp_", "meta_exporter_web_config_"))
    }
    missing = set(reference) - feed_metrics - seen
    assert not missing, f"documented but never exposed: {missing}"
    # Values that tell the story.
    status = families["meta_service_status"]
    current = {(s.labels["service"], s.labels["status"]) for s in status.samples if s.value == 1}
    assert ("facebook", "up") in current and ("instagram", "degraded") in current
    layer = {
        (s.labels["service"], s.labels["layer"])
        for s in families["meta_service_failure_layer"].samples
        if s.value == 1
    }
    assert ("instagram", "http") in layer and ("facebook", "none") in layer
    failures = families["meta_probe_failures"]
    assert any(
        s.labels == {"service": "instagram", "check": "web", "reason": "http_status"}
        and s.value >= 2
        for s in failures.samples
    )
    assert families["meta_vantage_up"].samples[0].value == 1
    phases = {
        s.labels["phase"]
        for s in families["meta_probe_phase_duration_seconds"].samples
        if s.labels["check"] == "graph_api"
    }
    assert phases == {"resolve", "connect", "tls", "processing", "transfer"}


async def test_no_label_value_is_a_url_address_or_error(client: TestClient) -> None:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith("meta_"):
            labels = line.split("{", 1)[1].rsplit("}", 1)[0] if "{" in line else ""
            assert not re.search(r"://|127\.0\.0\.1|::1|\s", labels), line


async def test_openmetrics_negotiation(client: TestClient) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")


async def test_status_api(client: TestClient) -> None:
    document = await (await client.get("/api/v1/status")).json()
    assert document["ready"] is True and document["vantage"]["up"] is True
    services = {s["name"]: s for s in document["services"]}
    assert set(services) == {"facebook", "instagram", "whatsapp", "control"}
    facebook = services["facebook"]
    assert (
        facebook["status"] == "up"
        and facebook["layer"] == "none"
        and facebook["since"].endswith("Z")
    )
    graph = next(c for c in facebook["checks"] if c["name"] == "graph_api")
    assert graph["last_result"]["success"] is True and graph["last_result"]["http_status"] == 400
    assert graph["last_result"]["tls_version"].startswith("TLSv1")
    assert services["control"]["control"] is True and "status" not in services["control"]


async def test_health_landing_and_ready(client: TestClient) -> None:
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    page = await (await client.get("/")).text()
    assert "Facebook" in page and "UP" in page and "/metrics" in page


async def test_not_ready_before_every_check_ran(config_file: Path) -> None:
    runtime = Runtime(loader.load(str(config_file)))
    app = init_app(runtime, lambda: loader.load(str(config_file)), start_probing=False)
    async with TestClient(TestServer(app)) as test_client:
        assert (await test_client.get("/-/ready")).status == 503


async def test_bad_reload_keeps_old_config_probing(client: TestClient, config_file: Path) -> None:
    good = config_file.read_text()
    config_file.write_text(good + "  oops: [\n")
    response = await client.post("/-/reload")
    assert response.status == 500
    assert "invalid YAML" in await response.text()
    before = await scrape(client)
    assert before["meta_exporter_config_last_reload_successful"].samples[0].value == 0
    probes_before = totals(before["meta_probes"])
    await asyncio.sleep(0.6)  # three 200 ms intervals: the old config must still be probing
    after = await scrape(client)
    probes_after = totals(after["meta_probes"])
    assert set(probes_after) == set(probes_before)
    assert all(probes_after[k] > probes_before[k] for k in probes_before)

    # A valid config with one more check is applied; counters of surviving checks carry on.
    config_file.write_text(
        good.replace(
            "      chat:\n",
            "      chat2:\n        kind: tcp\n"
            "        host: www.facebook.com\n        port: 9\n      chat:\n",
        )
    )
    response = await client.post("/-/reload")
    assert response.status == 200, await response.text()
    final = await scrape(client)
    assert final["meta_exporter_config_last_reload_successful"].samples[0].value == 1
    probes_final = totals(final["meta_probes"])
    assert ("whatsapp", "chat2") in probes_final
    assert probes_final[("facebook", "web")] >= probes_after[("facebook", "web")]
