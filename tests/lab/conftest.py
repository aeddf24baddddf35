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
from .topology import Lab, LabSettings

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout or cancel) unwinds like Ctrl-C, so lab teardown still runs."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A lab for the module; `LAB_VANTAGES = 3` in a module asks for three vantages,
    `LAB_SETTINGS = SHIPPED` the catalogue's own timing instead of the fast lab timing."""
    why = netns.require_root()
    if why is not None:
        pytest.skip(why)
    built = Lab(
        vantage_count=getattr(request.module, "LAB_VANTAGES", 1),
        settings=getattr(request.module, "LAB_SETTINGS", LabSettings()),
    ).up()
    try:
        yield built
    finally:
        names = [*(v.ns for v in built.vantages), *(built.ns(r) for r in ("router", "meta", "net"))]
        built.down()
        left = [n for n in netns.namespaces() if n in names]
        assert not left, f"lab namespaces left behind: {left}"


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    step: float = 0.1,
    describe: Callable[[], str] | None = None,
) -> float:
    """Poll until predicate() holds; returns the seconds it took. Fails after `timeout`,
    with what `describe` says of the state then."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            found = "" if describe is None else f": {describe()}"
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}{found}")
        time.sleep(step)


@pytest.fixture(scope="session")
def detection_log() -> Iterator[dict[str, Any]]:
    """Detection times per scenario, written to test-artifacts/lab-detection.json."""
    times: dict[str, Any] = {}
    yield times
    if times:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "lab-detection.json").write_text(json.dumps(times, indent=2))


# -- the transition scenarios' figures (tests/lab/test_transitions.py) ----------------------
#
# Those scenarios run in parallel, one pytest-xdist worker each: every worker has its own
# session, so no session fixture sees them all. Each test records its figures as the user
# property TRANSITIONS_PROPERTY; reports carry it to the process that sees every report (the
# xdist controller, or pytest itself without xdist), which writes the file and prints them.
TRANSITIONS_PROPERTY = "lab_transitions"
TRANSITIONS_FILE = "lab-transitions.json"
_transitions: dict[str, Any] = {}


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if name == TRANSITIONS_PROPERTY:
            _transitions.update(value)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _transitions and not _is_worker(session.config):
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / TRANSITIONS_FILE
        # `make transitions` runs (a)-(e), then (f) in a session of its own: merge, so the
        # file holds every scenario of the newest run of each.
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError):
            earlier = {}
        merged = {**earlier, **_transitions}
        path.write_text(json.dumps(dict(sorted(merged.items())), indent=2))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not _transitions or _is_worker(config):
        return
    terminalreporter.write_sep("-", f"lab transitions (test-artifacts/{TRANSITIONS_FILE})")
    for scenario, figures in sorted(_transitions.items()):
        terminalreporter.write_line(f"{scenario}: {json.dumps(figures.get('summary', figures))}")
