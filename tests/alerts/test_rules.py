"""The Prometheus rules in alerts/: promtool's checks and unit tests, and a lint of the rules.

- `promtool check rules` and `promtool test rules alerts/tests/*.test.yml` must pass (skipped
  with a message when promtool is not installed; CI installs it).
- alerts/tests/pending/*.test.yml reproduce known rule bugs: expected to fail (xfail) until the
  rule is fixed, then they fail here as "now passes" so that they get moved into alerts/tests/.
- Pure Python, always: alert names, severity, annotations, runbook anchors, and that every
  alert has promtool cases on both sides of its `for:` (so a new alert without tests fails).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = ROOT / "alerts"
RULES_FILE = ALERTS_DIR / "meta-outage.rules.yml"
RUNBOOK = ALERTS_DIR / "runbook.md"
TESTS_DIR = ALERTS_DIR / "tests"
PENDING_DIR = TESTS_DIR / "pending"

SEVERITIES = ("critical", "warning", "info")
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")
PROMTOOL_TIMEOUT = 600  # seconds; the burn-rate tests evaluate 18 h of history

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}


def parse_duration(value: object) -> float:
    """A Prometheus duration ("1h30m", "15s", "0") in seconds."""
    text = str(value).strip()
    if text == "0":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {value!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))


def load_alerts() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


ALERTS = load_alerts()
ALERT_IDS = [rule["alert"] for rule in ALERTS]
TEST_FILES = sorted(TESTS_DIR.glob("*.test.yml"))
PENDING_FILES = sorted(PENDING_DIR.glob("*.test.yml"))


# -- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not found on PATH: the alert rule tests need Prometheus's promtool "
            "(Debian: apt-get install prometheus); CI installs it"
        )
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )


def test_promtool_check_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", _rel(RULES_FILE))
    if result.returncode != 0:
        pytest.fail(f"promtool check rules failed:\n{result.stdout}", pytrace=False)


def test_promtool_test_rules(promtool: str) -> None:
    assert TEST_FILES, f"no promtool test files in {_rel(TESTS_DIR)}/*.test.yml"
    result = run_promtool(promtool, "test", "rules", *map(_rel, TEST_FILES))
    if result.returncode != 0:
        pytest.fail(f"promtool test rules failed:\n{result.stdout}", pytrace=False)


def _first_comment_line(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return path.name


@pytest.mark.parametrize("path", PENDING_FILES, ids=[p.name for p in PENDING_FILES])
def test_known_rule_bug_still_reproduces(promtool: str, path: Path) -> None:
    result = run_promtool(promtool, "test", "rules", _rel(path))
    if result.returncode == 0:
        pytest.fail(
            f"{_rel(path)} now passes: the rule bug it reproduces is fixed. Move it to "
            f"{_rel(TESTS_DIR)}/ so that it guards the fix.",
            pytrace=False,
        )
    if "exp:" not in result.stdout or "got:" not in result.stdout:
        # Not an assertion that failed: the file itself is broken.
        pytest.fail(f"promtool could not run {_rel(path)}:\n{result.stdout}", pytrace=False)
    pytest.xfail(f"{path.name}: {_first_comment_line(path)}")


# -- lint: the rules file ------------------------------------------------------------------


def test_alert_names_are_unique() -> None:
    duplicates = [name for name, n in Counter(ALERT_IDS).items() if n > 1]
    assert not duplicates, f"alert names used more than once: {duplicates}"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_name_is_camelcase_with_meta_prefix(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Meta[A-Z][A-Za-z0-9]*", name), (
        f"alert {name!r}: names are CamelCase and start with 'Meta' (e.g. MetaServiceDown)"
    )


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_has_severity(rule: dict[str, Any]) -> None:
    severity = (rule.get("labels") or {}).get("severity")
    assert severity in SEVERITIES, (
        f"alert {rule['alert']}: label severity must be one of {SEVERITIES}, got {severity!r}"
    )


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_has_annotations(rule: dict[str, Any]) -> None:
    annotations = rule.get("annotations") or {}
    missing = [key for key in REQUIRED_ANNOTATIONS if not str(annotations.get(key) or "").strip()]
    assert not missing, f"alert {rule['alert']}: missing annotations {missing}"


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    fence: str | None = None
    for line in markdown.splitlines():
        opening = re.match(r" {0,3}(`{3,}|~{3,})", line)
        if opening:
            marker = opening.group(1)
            if fence is None:
                fence = marker
                continue
            if marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
                continue
        if fence is not None:
            continue
        heading = re.match(r" {0,3}#{1,6}\s+(.*?)\s*(?:\s#+)?\s*$", line)
        if not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))  # links -> text
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_runbook_url_points_at_a_runbook_section(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    url = str((rule.get("annotations") or {}).get("runbook_url") or "")
    page, _, anchor = url.partition("#")
    assert page.endswith("/alerts/runbook.md"), (
        f"alert {name}: runbook_url {url!r} must point at alerts/runbook.md"
    )
    assert anchor == name.lower(), (
        f"alert {name}: runbook_url anchor must be #{name.lower()} (GitHub's anchor of a "
        f"'## {name}' heading), got {url!r}"
    )
    assert RUNBOOK.is_file(), f"{_rel(RUNBOOK)} does not exist (runbook_url of {name})"
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    assert anchor in anchors, f"{_rel(RUNBOOK)} has no section '## {name}' (anchor #{anchor})"


# -- lint: the promtool test files ---------------------------------------------------------


def _load_test_file(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _test_groups(paths: list[Path]) -> Iterator[tuple[str, float, dict[str, Any]]]:
    """(where, evaluation interval in seconds, test group) for every test group."""
    for path in paths:
        doc = _load_test_file(path)
        interval = parse_duration(doc.get("evaluation_interval", "1m"))
        for index, group in enumerate(doc.get("tests") or []):
            yield f"{path.name} [{group.get('name') or f'#{index}'}]", interval, group


@pytest.mark.parametrize(
    "path", TEST_FILES + PENDING_FILES, ids=[_rel(p) for p in TEST_FILES + PENDING_FILES]
)
def test_rule_test_file_setup(path: Path) -> None:
    doc = _load_test_file(path)
    rule_files = [(path.parent / f).resolve() for f in doc.get("rule_files") or []]
    assert rule_files == [RULES_FILE.resolve()], (
        f"{path.name}: rule_files must name the rules file relative to the test file "
        f"(e.g. ../meta-outage.rules.yml), got {doc.get('rule_files')}"
    )
    assert parse_duration(doc.get("evaluation_interval", "1m")) == 15, (
        f"{path.name}: evaluation_interval must be 15s, the rule groups' interval"
    )
    groups = [group["name"] for group in load_rules()["groups"]]
    assert doc.get("group_eval_order") == groups, (
        f"{path.name}: group_eval_order must be {groups}: without it promtool evaluates the "
        "rule groups in a random order, and an alert may or may not see the recordings of "
        "the same evaluation"
    )
    assert doc.get("tests"), f"{path.name}: no test groups"


@pytest.mark.parametrize("path", TEST_FILES, ids=[_rel(p) for p in TEST_FILES])
def test_firing_expectations_check_labels_and_annotations(path: Path) -> None:
    problems = []
    for where, _, group in _test_groups([path]):
        for case in group.get("alert_rule_test") or []:
            for expected in case.get("exp_alerts") or []:
                labels = expected.get("exp_labels") or {}
                annotations = expected.get("exp_annotations") or {}
                at = f"{where} {case['alertname']} at {case['eval_time']}"
                if "severity" not in labels:
                    problems.append(f"{at}: exp_labels without severity")
                if "summary" not in annotations:
                    problems.append(f"{at}: exp_annotations without summary")
    assert not problems, "\n".join(problems)


def _both_sides(name: str, hold: float) -> tuple[bool, list[str]]:
    """Whether a test group expects `name` quiet at t1 and firing at t2, close enough.

    With `for: D`: t1 < t2 < t1 + D. The alert fires at t2, so its condition has held since
    t2 - D or earlier, i.e. since before t1: at t1 it was pending, and not firing. Without
    `for:`: t1 < t2 <= t1 + evaluation interval: the first evaluation that sees the condition.
    """
    seen = []
    for where, interval, group in _test_groups(TEST_FILES):
        quiet, firing = [], []
        for case in group.get("alert_rule_test") or []:
            if case.get("alertname") != name:
                continue
            at = parse_duration(case["eval_time"])
            (firing if case.get("exp_alerts") else quiet).append(at)
        if not (quiet or firing):
            continue
        seen.append(f"{where}: not firing at {sorted(quiet)} s, firing at {sorted(firing)} s")
        for t1 in quiet:
            for t2 in firing:
                if t1 < t2 and (t2 - t1 < hold if hold else t2 - t1 <= interval):
                    return True, seen
    return False, seen


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_is_tested_on_both_sides_of_for(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    hold = parse_duration(rule.get("for", "0"))
    ok, seen = _both_sides(name, hold)
    if hold:
        want = (
            f"an eval_time where it does not fire and a later one, less than "
            f"{rule['for']} later, where it fires (pending, then firing)"
        )
    else:
        want = (
            "an eval_time where it does not fire and one where it fires at most one "
            "evaluation interval later"
        )
    found = "\n  ".join(seen) or "no alert_rule_test for it"
    assert ok, (
        f"alert {name}: needs a test group in {_rel(TESTS_DIR)}/*.test.yml with {want}; "
        f"found:\n  {found}"
    )


def test_parse_duration() -> None:
    assert parse_duration("0") == 0
    assert parse_duration("15s") == 15
    assert parse_duration("18h25m45s") == 18 * 3600 + 25 * 60 + 45
    assert parse_duration("1d") == 86400
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_github_anchors() -> None:
    markdown = (
        "# Runbook: Meta outage alerts\n"
        "## MetaServiceDown\n"
        "```sh\n"
        "# not a heading\n"
        "```\n"
        "### Layers: what they mean and who can fix them\n"
        "## MetaServiceDown\n"
        "## The [`service`](#x) label ##\n"
    )
    assert github_anchors(markdown) == {
        "runbook-meta-outage-alerts",
        "metaservicedown",
        "layers-what-they-mean-and-who-can-fix-them",
        "metaservicedown-1",
        "the-service-label",
    }
