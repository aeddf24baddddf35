"""`check`'s table, exit code and --watch frames, rendered from a status document."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.cli import checkview

NOW = datetime(2026, 11, 21, 14, 30, tzinfo=UTC).timestamp()
SINCE = datetime(2026, 11, 21, 14, 2, 41, tzinfo=UTC).timestamp()
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def check(reason: str = "ok") -> dict[str, Any]:
    return {"name": "web", "last_result": {"success": reason == "ok", "reason": reason}}


def service(
    name: str, status: str, layer: str = "none", detail: str = "", *checks: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name.lower(),
        "display_name": name,
        "control": False,
        "status": status,
        "layer": layer,
        "since_timestamp": SINCE,
        "detail": detail,
        "latency_seconds": 0.2124 if status == "up" else None,
        "checks": list(checks) or [check()],
    }


def document(*services: dict[str, Any], vantage_up: bool = True) -> dict[str, Any]:
    return {
        "headline": {"level": "down", "text": "WhatsApp is down at DNS since 14:02 UTC"},
        "vantage": {"up": vantage_up, "detail": "control checks pass"},
        "services": [*services, {"name": "control", "control": True, "checks": []}],
    }


EXAMPLE = document(
    service("Facebook", "up"),
    service(
        "WhatsApp",
        "down",
        "dns",
        "failing at dns: dns, web",
        check("dns_servfail"),
        check("dns_servfail"),
        check("tcp_timeout"),
    ),
    service("Instagram", "degraded", "none", "slow: web 3.40s > 3s", check()),
    service("Threads", "unknown", "none", "every check was blocked or could not run"),
)


def test_table_columns_and_details() -> None:
    text = checkview.render_table(EXAMPLE, now=NOW)
    assert text == (
        "SERVICE    STATUS    LAYER  SINCE         LATENCY  DETAIL\n"
        "Facebook   up        -      14:02:41 UTC  212 ms   -\n"
        "WhatsApp   down      dns    14:02:41 UTC  -        dns_servfail, tcp_timeout\n"
        "Instagram  degraded  -      14:02:41 UTC  -        slow: web 3.40s > 3s\n"
        "Threads    unknown   -      14:02:41 UTC  -        every check was blocked or could not run\n"
        "\n"
        "WhatsApp is down at DNS since 14:02 UTC\n"
        "This network: online - control checks pass\n"
    )


def test_colour_only_adds_codes_and_the_words_stay() -> None:
    plain = checkview.render_table(EXAMPLE, now=NOW)
    coloured = checkview.render_table(EXAMPLE, now=NOW, colour=True)
    assert "\x1b[31mdown    \x1b[0m" in coloured  # red, padded inside: columns stay aligned
    assert "\x1b[32mup      \x1b[0m" in coloured
    assert "\x1b[1;31mWhatsApp is down at DNS" in coloured
    assert ANSI.sub("", coloured) == plain
    assert "\x1b" not in plain


def test_width_truncates_only_the_detail() -> None:
    text = checkview.render_table(EXAMPLE, now=NOW, width=70)
    table = text.split("\n\n")[0].splitlines()
    assert max(len(line) for line in table) == 69, table
    assert table[4].endswith("  every check was b…")
    assert table[1].endswith("-")


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (document(service("Facebook", "up")), 0),
        (document(service("Facebook", "up"), service("Threads", "degraded")), 1),
        (document(service("Facebook", "unknown")), 1),
        (document(service("Facebook", "unknown"), vantage_up=False), 2),
    ],
)
def test_exit_code(doc: dict[str, Any], code: int) -> None:
    assert checkview.exit_code(doc) == code


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("tty", "environ", "expected"),
    [
        (True, {"TERM": "xterm-256color"}, True),
        (False, {"TERM": "xterm-256color"}, False),
        (True, {"TERM": "xterm", "NO_COLOR": "1"}, False),
        (True, {"TERM": "xterm", "NO_COLOR": ""}, True),  # no-color.org: empty means unset
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_wants_colour(tty: bool, environ: dict[str, str], expected: bool) -> None:
    assert checkview.wants_colour(FakeStream(tty), environ) is expected


def test_watch_frames_on_a_terminal_redraw_in_place() -> None:
    body = "A\nB\n"
    first = checkview.watch_frame(body, now=NOW, every=5, round_=1, tty=True)
    later = checkview.watch_frame(body, now=NOW, every=5, round_=2, tty=True)
    assert first.startswith(checkview.CLEAR_SCREEN + checkview.HOME)
    assert later.startswith(checkview.HOME) and checkview.CLEAR_SCREEN not in later
    assert later.endswith(checkview.ERASE_BELOW)
    lines = ANSI.sub("", later).splitlines()
    assert lines[0] == (
        "meta-outage-exporter check every 5 s, round 2, 2026-11-21 14:30:00 UTC (Ctrl-C stops)"
    )
    assert lines[2:] == ["A", "B"]
    # Every line erases its old tail, so a shorter new line leaves no leftovers.
    assert later.count(checkview.ERASE_LINE_END) == 4


def test_watch_frames_elsewhere_are_appended_with_a_stamp() -> None:
    frame = checkview.watch_frame("A\n", now=NOW, every=5, round_=3, tty=False)
    assert frame == "--- round 3, 2026-11-21 14:30:00 UTC ---\nA\n\n"
