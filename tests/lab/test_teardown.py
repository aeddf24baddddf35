"""Teardown removes everything a run left, even when the run was killed midway (the state
file is all there is): its namespaces, host links, files and `ip netns exec` config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import netns
from .topology import teardown_run


def test_a_killed_runs_leftovers_are_all_removed(tmp_path: Path) -> None:
    why = netns.require_root()
    if why is not None:
        pytest.skip(why)
    name = f"moxt{tmp_path.name[-6:].replace('_', '')[:4]}-vantage"
    netns.sh("ip", "netns", "add", name)
    config = Path("/etc/netns") / name
    config.mkdir(parents=True, exist_ok=True)
    (config / "resolv.conf").write_text("nameserver 10.1.1.53\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({"namespaces": [name], "host_devices": []}))
    try:
        teardown_run(run_dir)
        assert name not in netns.namespaces()
        assert not config.exists() and not run_dir.exists()
    finally:
        netns.sh("ip", "netns", "delete", name, check=False)
        if config.exists():
            for file in config.iterdir():
                file.unlink()
            config.rmdir()
