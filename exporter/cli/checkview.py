"""What `check` prints: the /api/v1/status document as a table, its exit code, and the
frames of `check --watch`. Pure functions of the document; the CLI does the I/O.

Colour is an extra, never the only cue: the status word is always there, and colour is
used only on a terminal that wants it (stdout a TTY, NO_COLOR unset, TERM not dumb).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from exporter.engine.headline import utc_time

EXIT_OK, EXIT_META_DOWN, EXIT_VANTAGE_OR_CONFIG = 0, 1, 2

COLUMNS = ("SERVICE", "STATUS", "LAYER", "SINCE", "LATENCY", "DETAIL")
GAP = "  "

_RESET = "\x1b[0m"
_STATUS_COLOUR = {"up": "32", "degraded": "33", "down": "31", "unknown": "2"}
_LEVEL_COLOUR = {"ok": "1;32", "degraded": "1;33", "down": "1;31", "local": "1;35"}

# --watch on a terminal: the first frame clears the screen, later ones go home and
# overwrite line by line (erasing each line's tail and the rest of the screen): no flicker.
CLEAR_SCREEN = "\x1b[2J"
HOME = "\x1b[H"
ERASE_LINE_END = "\x1b[K"
ERASE_BELOW = "\x1b[J"


def wants_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """https://no-color.org: NO_COLOR set to anything non-empty turns colour off."""
    return stream.isatty() and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def exit_code(document: Mapping[str, Any]) -> int:
    """0 every Meta service up; 1 any down, degraded or not judged; 2 the vantage is offline."""
    if not document["vantage"]["up"]:
        return EXIT_VANTAGE_OR_CONFIG
    meta = [s for s in document["services"] if not s["control"]]
    if any(s.get("status") != "up" for s in meta):
        return EXIT_META_DOWN
    return EXIT_OK


def _paint(text: str, code: str | None, colour: bool) -> str:
    return f"\x1b[{code}m{text}{_RESET}" if colour and code else text


def _detail(service: Mapping[str, Any]) -> str:
    """Failure reasons when checks fail; otherwise the verdict's own words (nothing if up)."""
    status = service["status"]
    if status == "up":
        return "-"
    if status != "unknown":
        reasons = sorted(
            {
                check["last_result"]["reason"]
                for check in service["checks"]
                if check["last_result"] and not check["last_result"]["success"]
            }
        )
        if reasons:
            return ", ".join(reasons)
    return service.get("detail") or "-"


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds * 1000:.0f} ms"


def _fit(text: str, room: int | None) -> str:
    if room is None or len(text) <= room:
        return text
    return text[: max(room - 1, 0)] + "…"


def render_table(
    document: Mapping[str, Any], *, now: float, colour: bool = False, width: int | None = None
) -> str:
    """The table, the headline and this network's health; `width` truncates DETAIL to fit."""
    rows: list[tuple[list[str], str]] = []
    for service in document["services"]:
        if service["control"] or "status" not in service:
            continue
        layer = service["layer"]
        since = service.get("since_timestamp")
        rows.append(
            (
                [
                    service["display_name"],
                    service["status"],
                    "-" if layer == "none" else layer,
                    "-" if since is None else utc_time(since, now, seconds=True),
                    _latency(service.get("latency_seconds")),
                    _detail(service),
                ],
                service["status"],
            )
        )
    columns = zip(COLUMNS, *(cells for cells, _ in rows), strict=True)
    widths = [max(len(cell) for cell in column) for column in columns]
    prefix = sum(widths[:-1]) + len(GAP) * (len(COLUMNS) - 1)
    # One column spare: writing the last column of a terminal leaves the cursor pending a wrap.
    room = None if width is None else max(width - 1 - prefix, 12)
    lines = [GAP.join(h.ljust(w) for h, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    for cells, status in rows:
        padded = [cell.ljust(w) for cell, w in zip(cells[:-1], widths, strict=False)]
        padded[1] = _paint(padded[1], _STATUS_COLOUR.get(status), colour)
        lines.append(GAP.join([*padded, _fit(cells[-1], room)]).rstrip())
    headline = document["headline"]
    vantage = document["vantage"]
    network = ("online" if vantage["up"] else "offline") + f" - {vantage['detail']}"
    return (
        "\n".join(lines)
        + "\n\n"
        + _paint(headline["text"], _LEVEL_COLOUR.get(headline["level"]), colour)
        + "\n"
        + f"This network: {network}\n"
    )


def watch_frame(body: str, *, now: float, every: float, round_: int, tty: bool) -> str:
    """One --watch round. On a terminal: redrawn in place; otherwise appended, separated."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if not tty:
        return f"--- round {round_}, {stamp} ---\n{body}\n"
    header = f"meta-outage-exporter check every {every:g} s, round {round_}, {stamp} (Ctrl-C stops)"
    lines = [header, "", *body.splitlines()]
    start = CLEAR_SCREEN + HOME if round_ == 1 else HOME
    return start + "".join(line + ERASE_LINE_END + "\n" for line in lines) + ERASE_BELOW
