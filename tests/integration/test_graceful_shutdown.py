"""SIGTERM while probes hang on servers that accept and never answer: the real exporter
process stops scheduling, cancels the probes in flight and exits 0 well within its deadline."""

from __future__ import annotations

import asyncio
import re
import signal
import textwrap
import time
from pathlib import Path

import aiohttp

from exporter.cli.commands import SHUTDOWN_DEADLINE
from tests.integration.exporter_process import exporter_process
from tests.integration.test_tcp_tls_probe import serving, until_eof


def hanging_config(port: int) -> str:
    """Two checks whose probes hang for 30 s each: they are in flight at SIGTERM."""
    return textwrap.dedent(
        f"""
        builtin_catalog: false
        global: {{interval: 200ms, timeout: 30s}}
        dns: {{resolvers: ["127.0.0.1:53"]}}
        egress: {{allow_networks: ["127.0.0.0/8"]}}
        services:
          hung:
            checks:
              web: {{kind: http, url: "http://127.0.0.1:{port}/"}}
              api: {{kind: http, url: "http://127.0.0.1:{port}/api"}}
        """
    )


async def test_sigterm_with_probes_in_flight_exits_0_in_time(tmp_path: Path) -> None:
    async with serving(until_eof) as port:
        config = tmp_path / "hung.yml"
        config.write_text(hanging_config(port))
        async with (
            exporter_process("--config.file", str(config)) as running,
            aiohttp.ClientSession() as http,
        ):
            deadline = time.monotonic() + 20
            while True:
                text = await (await http.get(f"{running.base}/metrics")).text()
                match = re.search(r"^meta_exporter_probes_in_flight (\S+)$", text, re.M)
                if match and float(match.group(1)) == 2:
                    break
                assert time.monotonic() < deadline, "the probes never got in flight"
                await asyncio.sleep(0.1)
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(running.process.wait(), SHUTDOWN_DEADLINE + 5)
            elapsed = time.monotonic() - started
            await running.stop()
    assert code == 0, running.log
    assert elapsed < SHUTDOWN_DEADLINE, f"{elapsed:.1f}s"
    assert "shutting down" in running.log and "stopped" in running.log
    assert "Traceback" not in running.log and "ignored cancellation" not in running.log
