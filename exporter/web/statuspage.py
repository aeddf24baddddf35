"""The status page at `/`: one self-contained HTML document (inline CSS and script, no
external assets), rendered from the same documents as /api/v1/status and /api/v1/history.

First paint needs no second request: the documents are embedded as JSON data blocks and
the script renders them at once, then refreshes both every few seconds in place. The
headline is also in the served HTML, and a <noscript> table (plus a meta refresh) serves
browsers without JavaScript. The Content-Security-Policy allows nothing but this exporter:
the inline style and script are allowed by their SHA-256 hashes, fetches go to 'self' only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from string import Template
from typing import Any

from exporter import __version__

_STATIC = resources.files(__package__) / "static"
_TEMPLATE = Template((_STATIC / "status.html").read_text(encoding="utf-8"))
_STYLE = (_STATIC / "status.css").read_text(encoding="utf-8")
_SCRIPT = (_STATIC / "status.js").read_text(encoding="utf-8")

LEVEL_SYMBOLS = {"ok": "\u2714", "degraded": "\u25b2", "down": "\u2716", "local": "\u26a0"}


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_sha256(_SCRIPT)}",
        f"style-src {_sha256(_STYLE)}",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _json_block(document: dict[str, Any]) -> str:
    """JSON safe inside <script type="application/json">: no '<' can close the element."""
    return json.dumps(document, separators=(",", ":")).replace("<", "\\u003c")


def _noscript_table(status: dict[str, Any]) -> str:
    """A plain table for browsers without JavaScript (the script renders the full page)."""
    rows = []
    for service in status["services"]:
        if service["control"] or "status" not in service:
            continue
        layer = service["layer"] if service["layer"] != "none" else "-"
        cells = (service["status"].upper(), layer.upper(), service["since"] or "")
        rows.append(
            f'<tr><th scope="row">{html.escape(service["display_name"])}</th>'
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
            + "</tr>"
        )
    return (
        "<table><thead><tr><th scope='col'>Service</th><th scope='col'>Status</th>"
        "<th scope='col'>Failing layer</th><th scope='col'>Since (UTC)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<p>Without JavaScript this page reloads every 30 s and shows no history.</p>"
    )


def render(status: dict[str, Any], history: dict[str, Any]) -> str:
    headline = status["headline"]
    symbol = LEVEL_SYMBOLS.get(headline["level"], "?")
    return _TEMPLATE.substitute(
        title=html.escape(f"{symbol} {headline['text']} \u2013 Meta status"),
        style=_STYLE,
        script=_SCRIPT,
        level=html.escape(headline["level"]),
        symbol=symbol,
        headline=html.escape(headline["text"]),
        noscript=_noscript_table(status),
        version=html.escape(__version__),
        status_json=_json_block(status),
        history_json=_json_block(history),
    )
