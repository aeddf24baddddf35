"""Processes the benchmarks start: our modules run from the repository, optionally pinned
to CPUs (taskset) and reniced; stopped by the PID we hold, their logs in the work dir."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.lab.promstack import Process

REPO = Path(__file__).resolve().parents[1]


# Both exporters run a little above other work on their CPU (the machine is shared), the
# bench servers above them: nothing of ours waits behind a stranger's test run.
SUBJECT_NICE = -5
SERVER_NICE = -10


def pinned(argv: list[str], cpus: str | None, nice: int = 0) -> list[str]:
    """argv run on `cpus` at niceness `nice`; each wrapper execs the next, so the PID we
    get is the program's own (pure)."""
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    return argv


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass
class RepoProcess(Process):
    """A Process whose Python imports this repository's packages (bench, exporter), or
    the exporter package from `tree` when given (an older copy, for before/after figures)."""

    tree: Path | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = [str(self.tree)] if self.tree else []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(REPO)])}
        with open(self.workdir / f"{self.name}.log", "wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=log, cwd=self.workdir, env=env
            )

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid
