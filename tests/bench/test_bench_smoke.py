"""The benchmark suite end to end in its smoke mode (bench.suite --smoke, about 15 s): both
exporters really probe the bench servers on loopback and the report comes out with every
part in place. It asserts the report's structure, never a speed: the figures of a few
seconds on a shared machine mean nothing (docs/benchmarks.md holds the real run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.root


def test_smoke_run_writes_the_report(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the suite needs root (DNS on port 53, a private mount for blackbox)")
    if shutil.which("prometheus-blackbox-exporter") is None:
        pytest.skip(
            "prometheus-blackbox-exporter is not installed (scripts/install-system-deps.sh)"
        )
    out = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ours/blackbox CPU per probe" in done.stdout  # each run prints its ratios
    document = json.loads(out.with_suffix(".json").read_text())
    https = document["cpu"]["https"]
    for subject in ("ours", "blackbox", "floor_openssl", "floor_ssl", "floor_curl"):
        figures = https["rounds"][0][subject]
        assert figures["probes"] > 0 and figures["failed"] == 0, figures
        assert figures["cpu_per_1000"] > 0 and figures["hwm_mib"] > 0, figures
    assert https["ratio"]["cpu_per_1000"] > 0
    assert document["meta"]["load_start"] and document["meta"]["load_end"]
    report = out.read_text()
    for part in ("# Benchmarks", "## Goals", "## 1. CPU per probe", "| https |", "make bench",
                 "The floor under an HTTPS probe"):  # fmt: skip
        assert part in report
