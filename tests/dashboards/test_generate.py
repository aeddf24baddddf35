"""The committed dashboards/*.json are exactly what the generator writes, byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dashboards import generate

from .model import DIRECTORY, REPO, UIDS


def test_committed_json_is_the_generators_output() -> None:
    for name, text in generate.rendered().items():
        committed = (DIRECTORY / name).read_bytes()
        assert committed == text.encode("utf-8"), f"{name} is stale: run `make dashboards`"


def test_generator_is_deterministic() -> None:
    assert generate.rendered() == generate.rendered()


def test_script_and_module_write_the_same_bytes(tmp_path: Path) -> None:
    """`python dashboards/generate.py` and `python -m dashboards.generate` (make dashboards)."""
    script, module = tmp_path / "script", tmp_path / "module"
    for out, argv in (
        (script, [str(DIRECTORY / "generate.py")]),
        (module, ["-m", "dashboards.generate"]),
    ):
        out.mkdir()
        subprocess.run([sys.executable, *argv, "--out", str(out)], cwd=REPO, check=True)
    for name in UIDS:
        committed = (DIRECTORY / name).read_bytes()
        assert (script / name).read_bytes() == committed
        assert (module / name).read_bytes() == committed


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--out", str(tmp_path)], cwd=REPO, check=True
    )
    ok = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--check", "--out", str(tmp_path)], cwd=REPO
    )
    assert ok.returncode == 0
    (tmp_path / "slo.json").write_text("{}\n")
    stale = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--check", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert stale.returncode == 1 and "slo.json" in stale.stderr
