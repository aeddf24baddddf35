"""The lab fixture: one lab per module (built once, healed between scenarios), torn down always.

Without root the lab tests skip with the reason; CI runs as root and runs them.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import netns
from .topology import Lab

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout or cancel) unwinds like Ctrl-C, so lab teardown still runs."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A lab for the module; `LAB_VANTAGES = 3` in a module asks for three vantages."""
    why = netns.require_root()
    if why is not None:
        pytest.skip(why)
    built = Lab(vantage_count=getattr(request.module, "LAB_VANTAGES", 1)).up()
    try:
        yield built
    finally:
        names = [*(v.ns for v in built.vantages), *(built.ns(r) for r in ("router", "meta", "net"))]
        built.down()
        left = [n for n in netns.namespaces() if n in names]
        assert not left, f"lab namespaces left behind: {left}"


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.1
) -> float:
    """Poll until predicate() holds; returns the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(step)


@pytest.fixture(scope="session")
def detection_log() -> Iterator[dict[str, Any]]:
    """Detection times per scenario, written to test-artifacts/lab-detection.json."""
    times: dict[str, Any] = {}
    yield times
    if times:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "lab-detection.json").write_text(json.dumps(times, indent=2))
