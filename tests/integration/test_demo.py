"""`meta-outage-exporter demo`: without root or internet, every status and layer shows up
within two minutes (QUIC ones included), and the demo's exporter only ever talks to loopback."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time

import aiohttp


async def test_demo_shows_every_status_and_layer() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "demo",
        "--web.listen-address",
        "127.0.0.1:0",
        "--demo.step",
        "7",  # a silent QUIC handshake takes a timeout (1.5 s) twice to confirm
        stderr=asyncio.subprocess.PIPE,
    )
    drain: asyncio.Task[bytes] | None = None
    try:
        assert process.stderr is not None
        base = ""
        while not base:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            assert line, "demo exited early"
            if match := re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line):
                base = match.group(1)
        # Keep reading its log: a full pipe would block the demo's event loop.
        drain = asyncio.create_task(process.stderr.read())
        statuses: set[str] = set()
        layers: set[str] = set()
        vantage_down = quic_blind = False
        deadline = time.monotonic() + 100
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                document = await (await http.get(f"{base}/api/v1/status")).json()
                meta = [s for s in document["services"] if not s["control"]]
                statuses |= {s["status"] for s in meta}
                layers |= {s["layer"] for s in meta}
                vantage_down |= not document["vantage"]["up"]
                quic_blind |= not document["vantage"]["quic_ok"]
                if (
                    statuses >= {"up", "degraded", "down", "unknown"}
                    and layers >= {"none", "bgp", "dns", "tls", "quic", "http"}
                    and vantage_down
                    and quic_blind
                ):
                    break
                await asyncio.sleep(0.25)
        assert statuses >= {"up", "degraded", "down", "unknown"}, statuses
        assert layers >= {"none", "bgp", "dns", "tls", "quic", "http"}, layers
        assert vantage_down and quic_blind
        config = json.dumps(document["config"])
        assert "<demo>" in config
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 15) == 0
        if drain is not None:
            await drain
