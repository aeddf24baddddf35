"""The status page in a real browser against the exporter in the lab.

Debian's Chromium, headless, driven by Playwright's sync API, runs on the host and opens
the vantage's exporter over the management link. One page per scenario, opened while the
lab is healthy and never reloaded: it must follow the scenario by refreshing itself.
- healthy: every service up;
- 4 Oct 2021 (Meta's DNS prefixes withdrawn): every service down at DNS;
- this vantage's uplink down: the page says the problem is on this side, and blames no one
  at Meta;
- the 2021 replay with the BGP feed (issue #7): rows down at BGP, the prefixes shown
  withdrawn, and Meta's status page as it says.
Every request the page makes must go to the exporter (host and port). Screenshots, desktop
and 375 px wide, are kept in test-artifacts/status-page/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import browser
from tests.support.browser import Traffic

from .conftest import wait_until
from .test_scenarios import all_up
from .topology import BGP_PEERS, META_DNS_PREFIXES, Lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(browser.unavailable() is not None, reason=str(browser.unavailable())),
]

# The page refreshes every 5 s; detection and the resolver's cache take ~10 s more.
SCENARIO_MS = 45_000


@pytest.fixture(scope="module")
def chromium(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium") / "profile"
    browser.clean_artifacts("lab-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            **browser.launch_options(profile, lab.exporter_url)
        )
        try:
            command_line = browser.browser_command_line(profile)
            for flag in [*browser.ISSUE_FLAGS, f"--user-data-dir={profile}"]:
                assert flag in command_line, f"Chromium runs without {flag}"
            yield context
        finally:
            context.close()


@pytest.fixture(autouse=True)
def healed(lab: Lab) -> None:
    lab.heal()
    wait_until(lambda: all_up(lab), 30, "every service up after healing")


@pytest.fixture
def page(lab: Lab, chromium: Any) -> Iterator[tuple[Any, Traffic]]:
    """The status page, opened on a healthy lab; checked for foreign requests afterwards."""
    opened = chromium.new_page()
    traffic = Traffic()
    traffic.watch(chromium, opened)
    opened.goto(lab.exporter_url + "/")
    opened.wait_for_function(browser.HEADLINE_HAS, arg="All Meta services are up")
    try:
        yield opened, traffic
    finally:
        opened.close()
    assert traffic.foreign(lab.exporter_url) == [], "the page asked another host"
    assert traffic.errors == [], "console errors (a CSP violation shows up here)"
    assert len(traffic.navigations) == 1, "the page reloaded instead of refreshing in place"


def screenshots(page: Any, name: str) -> list[Path]:
    """Full page at desktop width, then at 375 px (which must not scroll sideways)."""
    desktop = Path(browser.artifact(f"lab-{name}-desktop.png"))
    page.set_viewport_size(browser.DESKTOP)
    page.screenshot(path=str(desktop), full_page=True)
    page.set_viewport_size(browser.PHONE)
    assert page.evaluate(browser.OVERFLOW) <= 0, f"{name}: horizontal scrolling at 375 px"
    phone = Path(browser.artifact(f"lab-{name}-phone.png"))
    page.screenshot(path=str(phone), full_page=True)
    page.set_viewport_size(browser.DESKTOP)
    return [desktop, phone]


def test_healthy_every_service_is_up(lab: Lab, page: tuple[Any, Traffic]) -> None:
    tab, traffic = page
    rows = tab.evaluate(browser.ROWS)
    assert len(rows) == len(lab.status()["services"]) - 1  # every Meta service, not control
    assert {(r["status"], r["layer"]) for r in rows} == {("Up", "none")}
    assert tab.evaluate(browser.VANTAGE).startswith("This network: online")
    # It keeps refreshing while nothing happens: a new "Updated hh:mm:ss UTC" line.
    updated = tab.inner_text("#updated")
    tab.wait_for_function(browser.UPDATED_SINCE, arg=updated, timeout=12_000)
    assert traffic.count("/api/v1/status") >= 1 and traffic.count("/api/v1/history") >= 1
    assert all(p.stat().st_size > 10_000 for p in screenshots(tab, "healthy"))


def test_october_2021_every_service_is_down_at_dns(lab: Lab, page: tuple[Any, Traffic]) -> None:
    tab, _ = page
    lab.withdraw(*META_DNS_PREFIXES)
    try:
        tab.wait_for_function(browser.ALL_ROWS_ARE, arg=["Down", "DNS"], timeout=SCENARIO_MS)
        tab.wait_for_function(
            browser.HEADLINE_HAS, arg="Every Meta service is down at DNS since", timeout=SCENARIO_MS
        )
        assert tab.evaluate(browser.VANTAGE).startswith("This network: online")
        screenshots(tab, "october-2021")
    finally:
        lab.restore(*META_DNS_PREFIXES)
    tab.wait_for_function(browser.HEADLINE_HAS, arg="All Meta services are up", timeout=SCENARIO_MS)


def test_vantage_offline_says_the_problem_is_the_local_network(
    lab: Lab, page: tuple[Any, Traffic]
) -> None:
    tab, _ = page
    lab.uplink(False)
    try:
        tab.wait_for_function(
            browser.HEADLINE_HAS, arg="The problem is on your side", timeout=SCENARIO_MS
        )
        headline = tab.evaluate(browser.HEADLINE)
        assert "this network cannot reach" in headline and "Meta cannot be checked" in headline
        assert tab.evaluate(browser.VANTAGE).startswith("This network: offline")
        tab.wait_for_function(browser.ALL_ROWS_ARE, arg=["Unknown", "none"], timeout=SCENARIO_MS)
        screenshots(tab, "vantage-offline")
    finally:
        lab.uplink(True)
    tab.wait_for_function(browser.HEADLINE_HAS, arg="All Meta services are up", timeout=SCENARIO_MS)


def test_quic_blocked_here_is_said_and_blames_no_one(lab: Lab, page: tuple[Any, Traffic]) -> None:
    """UDP 443 dropped on this side: the page says this network blocks QUIC, every service
    stays up (their HTTP/3 checks are not judged), the vantage stays online."""
    tab, _ = page
    lab.block_quic(True)
    try:
        tab.wait_for_function(
            browser.HEADLINE_HAS, arg="this network blocks QUIC", timeout=SCENARIO_MS
        )
        assert tab.evaluate(browser.HEADLINE).startswith("All Meta services are up; ")
        assert {(r["status"], r["layer"]) for r in tab.evaluate(browser.ROWS)} == {("Up", "none")}
        vantage = tab.evaluate(browser.VANTAGE)
        assert vantage.startswith("This network: online") and "blocks QUIC" in vantage, vantage
        screenshots(tab, "quic-blocked")
    finally:
        lab.block_quic(False)
    tab.wait_for_function(
        "() => !document.getElementById('headline-text').textContent.includes('QUIC')",
        timeout=SCENARIO_MS,
    )


FEEDS_TEXT = "() => document.getElementById('feeds').innerText"


def test_october_2021_with_bgp_feed_shows_bgp_and_the_status_page(
    lab: Lab, page: tuple[Any, Traffic]
) -> None:
    tab, _ = page
    tab.wait_for_function(f"() => ({FEEDS_TEXT})().includes('seen by 10 of 10 RIS peers')")
    assert "Facebook Login: no known issues" in tab.evaluate(FEEDS_TEXT)
    lab.bgp(BGP_PEERS[:8], withdraw=META_DNS_PREFIXES)
    lab.withdraw(*META_DNS_PREFIXES)
    lab.official_status("facebook-login", "Major disruptions")
    try:
        tab.wait_for_function(browser.ALL_ROWS_ARE, arg=["Down", "BGP"], timeout=SCENARIO_MS)
        tab.wait_for_function(
            f"() => ({FEEDS_TEXT})().includes('WITHDRAWN by 8 of 10 RIS peers')",
            timeout=SCENARIO_MS,
        )
        tab.wait_for_function(
            f"() => ({FEEDS_TEXT})().includes('Facebook Login: major disruptions since')",
            timeout=SCENARIO_MS,
        )
        assert "after we saw it down" in tab.evaluate(FEEDS_TEXT)
        screenshots(tab, "october-2021-bgp")
    finally:
        lab.restore(*META_DNS_PREFIXES)
        lab.heal()
    tab.wait_for_function(browser.HEADLINE_HAS, arg="All Meta services are up", timeout=SCENARIO_MS)
