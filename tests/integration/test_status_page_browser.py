"""The status page in a real browser (Debian's headless Chromium via Playwright) against
the exporter on loopback and the fake Meta: it renders, refreshes in place when Meta breaks,
fits a phone, keeps its table semantics there, breaks no CSP rule, asks no host but the
exporter, and still says the essentials without JavaScript. The lab test
(tests/lab/test_status_page.py) replays the real scenarios; this one needs no root.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from exporter.sim.frontend import Fault, FrontendServer
from tests.integration.test_web import client
from tests.support import browser
from tests.support.browser import Traffic

__all__ = ["client"]  # the fixture, shared with test_web

pytestmark = pytest.mark.skipif(
    browser.unavailable() is not None, reason=str(browser.unavailable())
)


@pytest.fixture
def exporter_url(client: TestClient) -> str:
    """The exporter on loopback (test_web's client: every check has run)."""
    return str(client.make_url("/"))


@pytest.fixture
async def chromium(tmp_path: Path, exporter_url: str) -> AsyncIterator[Any]:
    """A persistent context (the only way to give Chromium a --user-data-dir)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            **browser.launch_options(tmp_path / "profile", exporter_url)
        )
        try:
            yield context
        finally:
            await context.close()


async def test_page_refreshes_in_place_fits_a_phone_and_asks_only_the_exporter(
    exporter_url: str, chromium: Any, frontend: FrontendServer, tmp_path: Path
) -> None:
    command_line = browser.browser_command_line(tmp_path / "profile")
    for flag in [*browser.ISSUE_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        assert flag in command_line, f"Chromium runs without {flag}"
    browser.clean_artifacts("loopback-")
    page = chromium.pages[0] if chromium.pages else await chromium.new_page()
    traffic = Traffic()
    traffic.watch(chromium, page)
    await page.goto(exporter_url)

    # First paint comes from the embedded documents: no wait for a fetch.
    assert await page.evaluate(browser.HEADLINE) == "All Meta services are up"
    rows = await page.evaluate(browser.ROWS)
    assert [r["service"] for r in rows] == ["Facebook", "Instagram", "WhatsApp"]
    assert {(r["status"], r["layer"]) for r in rows} == {("Up", "none")}
    assert "This network: online" in await page.evaluate(browser.VANTAGE)
    await page.screenshot(path=browser.artifact("loopback-healthy-desktop.png"), full_page=True)

    frontend.state.set_fault(Fault(host="www.facebook.com", status=503))
    frontend.state.set_fault(Fault(host="graph.facebook.com", status=502))
    await page.wait_for_function(browser.HEADLINE_HAS, arg="Facebook is down at HTTP since")
    rows = {r["service"]: r for r in await page.evaluate(browser.ROWS)}
    assert (rows["Facebook"]["status"], rows["Facebook"]["layer"]) == ("Down", "HTTP")
    assert (rows["Instagram"]["status"], rows["Instagram"]["layer"]) == ("Up", "none")
    # The strip now tells the story in words too (colour is never the only cue).
    strip = await page.get_attribute("tr[data-service=facebook] .strip", "aria-label")
    assert strip is not None and "down at HTTP from" in strip and "until now" in strip
    assert (
        await page.title()
        == "\u2716 " + await page.evaluate(browser.HEADLINE) + " \u2013 Meta status"
    )

    await page.set_viewport_size(browser.PHONE)
    assert await page.evaluate(browser.OVERFLOW) <= 0, "horizontal scrolling at 375 px"
    # Rows become cards on a phone, and they are still a table to a screen reader.
    tree = await page.locator("#services-body table").aria_snapshot()
    assert "- row" in tree and "- cell" in tree and "- rowheader" in tree, tree
    await page.screenshot(path=browser.artifact("loopback-facebook-down-phone.png"), full_page=True)

    assert len(traffic.navigations) == 1, "the page reloaded instead of refreshing in place"
    assert traffic.count("/api/v1/status") >= 1 and traffic.count("/api/v1/history") >= 1
    assert traffic.foreign(exporter_url) == [], "requests to another host"
    assert traffic.errors == [], "console errors (a CSP violation shows up here)"


async def test_without_javascript_the_headline_and_table_are_there(
    exporter_url: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            **browser.launch_options(tmp_path / "profile", exporter_url, javascript=False)
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(exporter_url)
            assert await page.inner_text("#headline") == "\u2714 All Meta services are up"
            table = await page.inner_text("#services noscript table")
            assert "Facebook\tUP\t-" in table
        finally:
            await context.close()
