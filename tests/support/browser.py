"""A real browser for the status page tests: Debian's Chromium, headless, driven by
Playwright (never `playwright install`: its own browser download is not used).

Shared by the loopback test (Playwright's async API, beside the async fakes) and the lab
test (its sync API): launch options, a traffic log of every request the page makes, and
DOM probes as JavaScript strings, which both APIs evaluate alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "status-page"
CHROMIUM = "/usr/bin/chromium"

# The issue's flags. --user-data-dir=<tmp> is passed as launch_persistent_context's
# user_data_dir (Playwright refuses it in args); Playwright adds its own automation flags.
ISSUE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def guard_flags(exporter_host: str) -> tuple[str, ...]:
    """Ours on top of the issue's: nothing but the exporter's address resolves inside the
    browser, so nothing Chromium does on its own can ask the system resolver or reach a
    public name."""
    return (f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {exporter_host}",)


PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1100, "height": 900}


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found: apt-get install chromium (scripts/install-system-deps.sh)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: pip install -e '.[test]'"
    return None


def launch_options(
    user_data_dir: Path, exporter_url: str, *, javascript: bool = True
) -> dict[str, Any]:
    """Keyword arguments for chromium.launch_persistent_context (sync and async alike)."""
    host = urlsplit(exporter_url).hostname
    assert host, exporter_url
    return {
        "user_data_dir": str(user_data_dir),
        "executable_path": CHROMIUM,
        "headless": True,
        "args": [*ISSUE_FLAGS, *guard_flags(host)],
        "viewport": DESKTOP,
        "java_script_enabled": javascript,
    }


def browser_command_line(user_data_dir: Path) -> list[str]:
    """The running browser process's argv (found by its unique user data dir)."""
    marker = f"--user-data-dir={user_data_dir}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in argv and not any(a.startswith(b"--type=") for a in argv):
            return [a.decode() for a in argv if a]
    return []


@dataclass
class Traffic:
    """Every request the browser context makes, plus console errors and navigations."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)

    def watch(self, context: Any, page: Any) -> None:
        context.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text) if message.type in ("error", "warning") else None
            ),
        )
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on(
            "framenavigated",
            lambda frame: self.navigations.append(frame.url) if frame == page.main_frame else None,
        )

    def foreign(self, base_url: str) -> list[str]:
        """Requests to any scheme, host or port other than the exporter's."""
        origin = urlsplit(base_url)
        return [
            url
            for url in self.requests
            if (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
        ]

    def count(self, path: str) -> int:
        return sum(urlsplit(url).path == path for url in self.requests)


def artifact(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / name)


def clean_artifacts(prefix: str) -> None:
    """Old screenshots of this test go, so a kept artifact is always from the last run."""
    if ARTIFACTS.is_dir():
        for old in ARTIFACTS.glob(f"{prefix}*.png"):
            old.unlink()


# -- DOM probes (JavaScript evaluated in the page) ------------------------------------------

# What a reader sees per service row: name, status word, failing layer.
ROWS = """() => [...document.querySelectorAll('#services-body tbody tr')].map((row) => ({
  service: row.querySelector('th').firstChild.textContent.trim(),
  status: row.querySelector('.badge').innerText.replace(/^\\S+\\s+/, '').trim(),
  layer: row.querySelectorAll('td')[1].innerText.trim(),
}))"""
HEADLINE = "() => document.getElementById('headline-text').textContent"
VANTAGE = "() => document.getElementById('vantage').innerText"
# Pixels the page is wider than the viewport (> 0: a horizontal scroll bar).
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
# Wait conditions: arg is the text / status / (status, layer) pair to wait for.
UPDATED_SINCE = "(before) => document.getElementById('updated').textContent !== before"
HEADLINE_HAS = "(text) => document.getElementById('headline-text').textContent.includes(text)"
ALL_ROWS_ARE = """([status, layer]) => {
  const rows = [...document.querySelectorAll('#services-body tbody tr')];
  return rows.length > 0 && rows.every((row) =>
    row.querySelector('.badge').innerText.endsWith(status) &&
    row.querySelectorAll('td')[1].innerText.trim() === layer);
}"""
