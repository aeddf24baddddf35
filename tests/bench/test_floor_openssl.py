"""The C floor (bench/floor.py --engine openssl, bench/floor_openssl.c) against real servers on
loopback: the bench's own, and a TLS server of the test's that answers what each test needs.
It probes the bench server on the wheel's OpenSSL; it fails, and says why, on a certificate
from another CA or for another name, an answer cut short and a non-2xx answer; SIGTERM ends
it at once with its record written and nothing counted as failed. Figures are not asserted:
docs/benchmarks.md holds the real run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pycurl
import pytest

from bench.floor import openssl_floor
from bench.servers import BENCH_HOST, lab_ca

REPO = Path(__file__).resolve().parents[2]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Bench(NamedTuple):
    ca_dir: Path
    https_port: int
    dns_port: int


def _stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    try:
        server.communicate(timeout=10)  # waits, and closes its pipe
    except subprocess.TimeoutExpired:
        server.kill()
        server.communicate()


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
        _stop(server)
        pytest.fail(f"bench.servers --role {role} did not start")
    return server, json.loads(line)["port"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    if shutil.which("cc") is None or not Path("/usr/include/openssl/ssl.h").exists():
        pytest.skip("no C compiler or OpenSSL headers (scripts/install-system-deps.sh)")
    openssl_floor()  # built before any test times its floor
    ca_dir = tmp_path_factory.mktemp("ca")
    started: list[subprocess.Popen[str]] = []
    try:
        https, https_port = _serve("https", "--ca-dir", str(ca_dir))
        started.append(https)
        dns, dns_port = _serve("dns", "--answer", "127.0.0.1")  # www.bench.lab: 127.0.0.1
        started.append(dns)
        yield Bench(ca_dir, https_port, dns_port)
    finally:
        for server in started:
            _stop(server)


class CannedTls:
    """A TLS server on loopback with a lab certificate for `names`: to every request it sends
    `answer` and hangs up."""

    def __init__(self, ca_dir: Path, names: list[str], answer: bytes) -> None:
        self.context = lab_ca(ca_dir).context_for(names)
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # so the thread sees `stopping` soon
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    request = b""
                    while b"\r\n\r\n" not in request and (chunk := tls.recv(4096)):
                        request += chunk
                    tls.sendall(self.answer)
            except (OSError, ssl.SSLError):
                raw.close()  # a client that refused our certificate

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()


def _floor(
    bench: Bench,
    record: Path,
    *,
    seconds: float,
    port: int | None = None,
    ca_file: Path | None = None,
    delay_ms: int = 0,
) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "bench.floor", "--engine", "openssl", "--kind", "https",
        f"--url=https://{BENCH_HOST}:{port or bench.https_port}/d/{delay_ms}",
        f"--dns=127.0.0.1:{bench.dns_port}", f"--ca-file={ca_file or bench.ca_dir / 'lab-ca.pem'}",
        "--rate=20", f"--seconds={seconds}", f"--record={record}",
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True)


def _finish(floor: subprocess.Popen[str], record: Path, timeout: float = 60) -> dict:
    try:
        _, errors = floor.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        floor.kill()
        floor.communicate()
        raise
    assert floor.returncode == 0, errors
    return json.loads(record.read_text())


def _canned(bench: Bench, tmp_path: Path, names: list[str], answer: bytes) -> dict:
    server = CannedTls(bench.ca_dir, names, answer)
    try:
        record = tmp_path / "floor.json"
        return _finish(_floor(bench, record, seconds=0.5, port=server.port), record)
    finally:
        server.close()


def test_the_c_floor_probes_the_bench_server_on_the_wheels_openssl(
    bench: Bench, tmp_path: Path
) -> None:
    record = tmp_path / "floor.json"
    figures = _finish(_floor(bench, record, seconds=1.0), record)
    assert 15 <= len(figures["started_at"]) <= 21, figures  # 20 a second, on schedule
    assert figures["failed"] == 0 and figures["last_error"] is None, figures
    # The OpenSSL libcurl uses ("OpenSSL/3.6.5" in pycurl.version), not the system's.
    wheel_openssl = next(p for p in pycurl.version.split() if p.startswith("OpenSSL/"))
    assert figures["library"].startswith(wheel_openssl.replace("/", " ") + " "), figures


def test_a_certificate_from_another_ca_fails_every_probe_and_says_why(
    bench: Bench, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    record = tmp_path / "floor.json"
    floor = _floor(bench, record, seconds=0.5, ca_file=lab_ca(other_ca).ca_pem_path(other_ca))
    figures = _finish(floor, record)
    assert figures["failed"] == len(figures["started_at"]) > 0, figures
    assert "certificate verify failed" in figures["last_error"], figures
    assert "local issuer certificate" in figures["last_error"], figures


def test_a_certificate_for_another_name_fails_verification(bench: Bench, tmp_path: Path) -> None:
    figures = _canned(bench, tmp_path, ["other.bench.lab"], OK)
    assert figures["failed"] == len(figures["started_at"]) > 0, figures
    assert "hostname mismatch" in figures["last_error"], figures


def test_the_canned_server_itself_passes(bench: Bench, tmp_path: Path) -> None:
    """The control for the two below: the same server, a whole 2xx answer, no failure."""
    figures = _canned(bench, tmp_path, [BENCH_HOST], OK)
    assert figures["failed"] == 0 and len(figures["started_at"]) > 0, figures


def test_an_answer_shorter_than_its_content_length_fails(bench: Bench, tmp_path: Path) -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly this"
    figures = _canned(bench, tmp_path, [BENCH_HOST], short)
    assert figures["failed"] == len(figures["started_at"]) > 0, figures
    assert figures["last_error"].startswith("answer cut short"), figures


def test_a_non_2xx_answer_fails(bench: Bench, tmp_path: Path) -> None:
    error = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    figures = _canned(bench, tmp_path, [BENCH_HOST], error)
    assert figures["failed"] == len(figures["started_at"]) > 0, figures
    assert figures["last_error"] == "not a 2xx answer", figures


def test_a_server_that_never_answers_the_handshake_reads_as_a_timeout(
    bench: Bench, tmp_path: Path
) -> None:
    """The kernel accepts the connection, nobody reads it: the 5 s socket timeout ends the
    handshake, and the record says so (not "connection closed")."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        record = tmp_path / "floor.json"
        floor = _floor(bench, record, seconds=0.01, port=silent.getsockname()[1])
        figures = _finish(floor, record, timeout=30)
    assert figures["failed"] == len(figures["started_at"]) == 1, figures
    assert figures["last_error"] == "handshake: timeout", figures


def test_sigterm_mid_probe_ends_the_loop_at_once_and_writes_the_record(
    bench: Bench, tmp_path: Path
) -> None:
    record = tmp_path / "floor.json"
    # The server answers after 10 s: the signal lands while the first probe waits for it.
    floor = _floor(bench, record, seconds=60.0, delay_ms=10_000)
    binary = os.path.realpath(openssl_floor())
    deadline = time.monotonic() + 30
    while os.path.realpath(f"/proc/{floor.pid}/exe") != binary:  # Python has exec'd it
        assert time.monotonic() < deadline and floor.poll() is None, "the C floor never started"
        time.sleep(0.05)
    time.sleep(0.5)  # its first probe is under way
    floor.send_signal(signal.SIGTERM)
    # Well before the server's answer: the signal ends the blocking read, not the timeout.
    figures = _finish(floor, record, timeout=5)
    assert len(figures["started_at"]) == 1, figures
    assert figures["failed"] == 0 and figures["last_error"] is None, figures
