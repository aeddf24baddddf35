"""Acceptance: with the egress policy set to loopback and the REAL built-in catalogue, `check`
sends nothing, blames nothing on Meta, says the vantage is offline and exits 2.

The proof is a Python audit hook in the exporter process recording every socket connect/send
and every libc lookup. As root, the process also runs in a fresh, empty network namespace
(`unshare --net`), so even a bug could not reach the real Meta from a test run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def is_loopback(destination: str) -> bool:
    match = re.match(r"\('([^']+)'", destination)
    if not match:
        return False
    try:
        return ipaddress.ip_address(match.group(1).split("%")[0]).is_loopback
    except ValueError:
        return False


def run_audited(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, list[str]]]:
    report = tmp_path / "audit.json"
    command = [sys.executable, str(HERE / "audited_cli.py"), str(report), *args]
    if os.geteuid() == 0 and shutil.which("unshare"):
        command = ["unshare", "--net", *command]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, cwd=HERE.parents[1]
    )
    return completed, json.loads(report.read_text())


def test_check_with_loopback_policy_and_real_catalogue_sends_nothing(tmp_path: Path) -> None:
    completed, audit = run_audited(
        tmp_path,
        "check",
        "--json",
        "--egress.allow-network",
        "127.0.0.0/8",
        "--egress.allow-network",
        "::1/128",
    )
    assert completed.returncode == 2, completed.stderr
    assert audit["connects"] == [], "sockets were opened"
    assert audit["lookups"] == [], "the libc resolver was used"
    document = json.loads(completed.stdout)
    assert document["vantage"]["up"] is False
    assert "blocked by the egress policy" in document["vantage"]["detail"]
    reasons = {c["last_result"]["reason"] for s in document["services"] for c in s["checks"]}
    assert reasons == {"blocked_by_policy"}
    meta = [s for s in document["services"] if not s["control"]]
    assert len(meta) >= 9
    assert {s["status"] for s in meta} == {"unknown"}, (
        "a blocked vantage must never say Meta is down"
    )


def test_check_table_says_it_is_us(tmp_path: Path) -> None:
    completed, audit = run_audited(tmp_path, "check", "--egress.allow-network", "127.0.0.0/8")
    assert completed.returncode == 2
    assert not [c for c in audit["connects"] if not is_loopback(c)]
    assert "The problem is on your side" in completed.stdout
    assert "This network: offline - every control check is blocked" in completed.stdout
    assert " down " not in completed.stdout
