"""The status page and the JSON behind it, over HTTP against the loopback fake Meta:
/ (self-contained, CSP by hash), /api/v1/status's headline and latency, /api/v1/history."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from exporter.sim.frontend import Fault, FrontendServer
from exporter.web.server import RUNTIME
from tests.integration.test_web import client, wait_for

__all__ = ["client"]  # the fixture, shared with test_web


@pytest.fixture(autouse=True)
async def settled(client: TestClient) -> None:
    """Every check ran (test_web's client waits for that) and the verdicts say up."""
    runtime = client.app[RUNTIME]
    await wait_for(lambda: runtime.services["facebook"].status.value == "up")


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def element(page: str, tag: str, attributes: str = "") -> str:
    match = re.search(rf"<{tag}{attributes}>(.*?)</{tag}>", page, re.DOTALL)
    assert match, f"no <{tag}{attributes}>"
    return match.group(1)


async def test_page_is_self_contained_and_its_csp_allows_only_its_own_inline_code(
    client: TestClient,
) -> None:
    response = await client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["script-src"] == sha256(element(page, "script", ""))
    assert policy["style-src"] == sha256(element(page, "style"))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # No external asset of any kind: no absolute or protocol-relative URL in an attribute,
    # no CSS import or url(), and exactly one executable inline script.
    assert not re.search(r"""(src|href|action)=["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert len(re.findall(r"<script>", page)) == 1
    assert re.search(r'<meta name="viewport" content="width=device-width', page)


async def test_page_embeds_the_documents_and_says_the_headline_without_script(
    client: TestClient,
) -> None:
    page = await (await client.get("/")).text()
    status = json.loads(element(page, "script", ' type="application/json" id="initial-status"'))
    history = json.loads(element(page, "script", ' type="application/json" id="initial-history"'))
    assert status["headline"] == {"level": "ok", "text": "All Meta services are up"}
    assert {s["name"] for s in history["services"]} == {"facebook", "instagram", "whatsapp"}
    assert re.search(r'role="status" aria-live="polite".*All Meta services are up', page)
    head, body = re.findall(r"<noscript>(.*?)</noscript>", page, re.DOTALL)
    assert head == '<meta http-equiv="refresh" content="30">'
    noscript = body
    assert re.search(r'<th scope="row">Facebook</th><td>UP</td><td>-</td>', noscript)


async def test_embedded_json_cannot_close_its_script_element(
    client: TestClient, config_file: Path
) -> None:
    config_file.write_text(
        config_file.read_text().replace(
            "display_name: WhatsApp", "display_name: '</script><script>alert(1)</script>'"
        )
    )
    assert (await client.post("/-/reload")).status == 200
    page = await (await client.get("/")).text()
    assert "</script><script>alert(1)" not in page
    status = json.loads(element(page, "script", ' type="application/json" id="initial-status"'))
    assert "</script><script>alert(1)</script>" in [s["display_name"] for s in status["services"]]


async def test_status_api_leads_with_the_headline_and_gives_latency(
    client: TestClient, frontend: FrontendServer
) -> None:
    document = await (await client.get("/api/v1/status")).json()
    services = {s["name"]: s for s in document["services"]}
    assert 0 < services["facebook"]["latency_seconds"] < 2
    assert "latency_seconds" not in services["control"]
    frontend.state.set_fault(Fault(host="www.facebook.com", status=503))
    frontend.state.set_fault(Fault(host="graph.facebook.com", status=502))
    runtime = client.app[RUNTIME]
    await wait_for(lambda: runtime.services["facebook"].status.value == "down")
    document = await (await client.get("/api/v1/status")).json()
    assert document["headline"]["level"] == "down"
    assert re.fullmatch(
        r"Facebook is down at HTTP since \d\d:\d\d UTC", document["headline"]["text"]
    )


async def test_history_api_records_the_change(client: TestClient, frontend: FrontendServer) -> None:
    frontend.state.set_fault(Fault(host="www.instagram.com", status=503))
    runtime = client.app[RUNTIME]
    await wait_for(lambda: runtime.services["instagram"].status.value == "degraded")
    document = await (await client.get("/api/v1/history")).json()
    assert document["window_seconds"] == 6 * 3600
    assert document["started_at_timestamp"] <= document["now_timestamp"]
    instagram = next(s for s in document["services"] if s["name"] == "instagram")
    segments = instagram["segments"]
    assert [(s["status"], s["layer"]) for s in segments][-2:] == [
        ("up", "none"),
        ("degraded", "http"),
    ]
    assert segments[-1]["end"] is None and segments[-1]["end_timestamp"] is None
    assert all(a["end_timestamp"] == b["start_timestamp"] for a, b in itertools.pairwise(segments))
    assert segments[-1]["start"].endswith("Z")
    assert [s["status"] for s in document["vantage"]["segments"]][-1] == "up"


async def test_favicon_is_empty_not_missing(client: TestClient) -> None:
    assert (await client.get("/favicon.ico")).status == 204
