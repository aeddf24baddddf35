"""The command line as a user runs it: validate, check (exit 0/1/2), run with SIGHUP and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from exporter.sim.dnsserver import DnsServer
from exporter.sim.frontend import Fault, FrontendServer

CLI = [sys.executable, "-m", "exporter"]


async def run_cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_validate_ok(config_file: Path) -> None:
    code, out, _ = await run_cli("validate", "--config.file", str(config_file))
    assert code == 0 and "OK, 3 Meta services" in out


async def test_validate_reports_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("global:\n  interval: 0s\n  timeot: 1s\n")
    code, _, err = await run_cli("validate", "--config.file", str(bad))
    assert code == 2
    assert f"{bad}:2:13: global.interval: must be greater than 0" in err
    assert f"{bad}:3:11: global.timeot: unknown key 'timeot' (hint: did you mean 'timeout'?)" in err


async def test_bad_flag_value_is_a_clear_error(config_file: Path) -> None:
    code, _, err = await run_cli(
        "check", "--config.file", str(config_file), "--egress.allow-network", "nope"
    )
    assert code == 2 and "'nope' is not a network" in err


async def test_check_all_up_exits_0(config_file: Path) -> None:
    code, out, err = await run_cli("check", "--config.file", str(config_file))
    assert code == 0, out + err
    assert re.search(r"^Facebook\s+up\s+-\s+\d\d:\d\d:\d\d UTC\s+\d+ ms\s+-$", out, re.MULTILINE), (
        out
    )
    assert "\nAll Meta services are up\nThis network: online - control checks pass\n" in out
    assert "\x1b[" not in out, "colour or cursor codes on a pipe"


async def test_check_meta_down_exits_1(config_file: Path, frontend: FrontendServer) -> None:
    frontend.state.set_fault(Fault(host="www.facebook.com", status=503))
    frontend.state.set_fault(Fault(host="graph.facebook.com", status=502))
    code, out, _ = await run_cli("check", "--config.file", str(config_file))
    assert code == 1, out
    assert re.search(
        r"^Facebook\s+down\s+http\s+\d\d:\d\d:\d\d UTC\s+\S+ ms\s+http_status$", out, re.MULTILINE
    ), out
    assert re.search(r"^Instagram\s+up", out, re.MULTILINE)
    assert re.search(r"^Facebook is down at HTTP since \d\d:\d\d UTC$", out, re.MULTILINE), out
    assert "This network: online - control checks pass" in out


async def test_check_dns_outage_is_down_at_dns(config_file: Path, dns_server: DnsServer) -> None:
    dns_server.set_fault("facebook.com", "servfail")
    code, out, _ = await run_cli("check", "--config.file", str(config_file))
    assert code == 1, out
    assert re.search(r"^Facebook\s+down\s+dns\s", out, re.MULTILINE), out


@contextlib.asynccontextmanager
async def running_exporter(
    config_file: Path,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        "--config.file",
        str(config_file),
        "--web.listen-address",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        base = ""
        while not base:
            line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
            assert line, "exporter exited before listening"
            if match := re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line):
                base = match.group(1)
        yield process, base
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_log_until(process: asyncio.subprocess.Process, needle: str) -> str:
    assert process.stderr is not None
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
        assert line, f"log ended before {needle!r}"
        if needle in line:
            return line


async def test_run_serves_reloads_on_sighup_and_stops_on_sigterm(config_file: Path) -> None:
    async with running_exporter(config_file) as (process, base), aiohttp.ClientSession() as http:
        assert (await http.get(f"{base}/-/healthy")).status == 200
        for _ in range(100):
            if (await http.get(f"{base}/-/ready")).status == 200:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("never ready")
        good = config_file.read_text()
        config_file.write_text(good.replace("interval: 200ms", "interval: -1s"))
        process.send_signal(signal.SIGHUP)
        line = await read_log_until(process, "config reload rejected")
        assert "global.interval: must be greater than 0" in line
        metrics = await (await http.get(f"{base}/metrics")).text()
        assert "meta_exporter_config_last_reload_successful 0.0" in metrics
        assert 'meta_service_status{service="facebook",status="up"} 1.0' in metrics
        config_file.write_text(good)
        process.send_signal(signal.SIGHUP)
        await read_log_until(process, "config reloaded")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_listen_address_in_use_is_reported(config_file: Path) -> None:
    async with running_exporter(config_file) as (_, base):
        port = base.rsplit(":", 1)[1]
        code, _, err = await run_cli(
            "run",
            "--config.file",
            str(config_file),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            timeout=20,
        )
        assert code == 2 and "cannot listen on 127.0.0.1:" in err
