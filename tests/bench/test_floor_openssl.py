"""The C floor (bench/floor.py --engine openssl, bench/floor_openssl.c) against the real bench
servers on loopback: it probes, a certificate the lab CA did not sign fails every probe with
the reason, and SIGTERM ends the loop with its record written and nothing counted as failed.
Figures are not asserted: docs/benchmarks.md holds the real run."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.floor import openssl_floor
from bench.servers import BENCH_HOST
from exporter.sim.certs import LabCA

REPO = Path(__file__).resolve().parents[2]


def _serve(role: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", "--role", role, "--listen", "127.0.0.1:0", *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()  # {"port": N} once listening
    if not line:
        server.kill()
        pytest.fail(f"bench.servers --role {role} did not start")
    return server, json.loads(line)["port"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, int]]:
    if shutil.which("cc") is None or not Path("/usr/include/openssl/ssl.h").exists():
        pytest.skip("no C compiler or OpenSSL headers (scripts/install-system-deps.sh)")
    ca_dir = tmp_path_factory.mktemp("ca")
    https, https_port = _serve("https", "--ca-dir", str(ca_dir))
    dns, dns_port = _serve("dns", "--answer", "127.0.0.1")
    try:
        yield ca_dir, https_port, dns_port
    finally:
        for server in (https, dns):
            server.terminate()
            server.communicate(timeout=10)  # waits, and closes its pipe


def _floor(
    servers: tuple[Path, int, int],
    record: Path,
    ca_file: Path,
    seconds: float,
    delay_ms: int = 0,
) -> subprocess.Popen[str]:
    _, https_port, dns_port = servers
    argv = [
        sys.executable, "-m", "bench.floor", "--engine", "openssl", "--kind", "https",
        f"--url=https://{BENCH_HOST}:{https_port}/d/{delay_ms}", f"--dns=127.0.0.1:{dns_port}",
        f"--ca-file={ca_file}", "--rate=20", f"--seconds={seconds}", f"--record={record}",
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_c_floor_probes_the_bench_server(
    servers: tuple[Path, int, int], tmp_path: Path
) -> None:
    record = tmp_path / "floor.json"
    floor = _floor(servers, record, servers[0] / "lab-ca.pem", seconds=1.0)
    _, errors = floor.communicate(timeout=60)
    assert floor.returncode == 0, errors
    figures = json.loads(record.read_text())
    assert 15 <= len(figures["started_at"]) <= 21, figures  # 20 a second, on schedule
    assert figures["failed"] == 0 and figures["last_error"] is None, figures
    assert figures["library"].startswith("OpenSSL 3."), figures  # the wheel's, as libcurl's
    assert openssl_floor().exists()  # built once, then cached


def test_a_certificate_from_another_ca_fails_every_probe_and_says_why(
    servers: tuple[Path, int, int], tmp_path: Path
) -> None:
    ca_file = LabCA().ca_pem_path(tmp_path)  # a root of its own: not the server's
    record = tmp_path / "floor.json"
    floor = _floor(servers, record, ca_file, seconds=0.5)
    _, errors = floor.communicate(timeout=60)
    assert floor.returncode == 0, errors
    figures = json.loads(record.read_text())
    assert figures["failed"] == len(figures["started_at"]) > 0, figures
    assert "certificate verify failed" in figures["last_error"], figures


def test_sigterm_ends_the_loop_and_writes_the_record(
    servers: tuple[Path, int, int], tmp_path: Path
) -> None:
    record = tmp_path / "floor.json"
    # The server answers after 3 s: the signal lands while the first probe waits for it.
    floor = _floor(servers, record, servers[0] / "lab-ca.pem", seconds=60.0, delay_ms=3000)
    time.sleep(1.0)
    floor.send_signal(signal.SIGTERM)
    _, errors = floor.communicate(timeout=10)
    assert floor.returncode == 0, errors
    figures = json.loads(record.read_text())
    assert len(figures["started_at"]) == 1, figures
    assert figures["failed"] == 0, figures  # the probe SIGTERM cut short is not a failure
