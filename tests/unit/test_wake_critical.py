"""Issue 16, item 1: when a critical check starts failing, the service's other critical checks
are probed at once, so an outage is confirmed about one re-check after its first failure
whatever phase each check's interval is in; nothing extra while healthy."""

from __future__ import annotations

from exporter.model import Reason

from .runtime_feed import CONTROLS, Feed


def http(url: str, *, critical: bool = True) -> dict:
    return {"kind": "http", "url": url, "valid_status_codes": ["<500"], "critical": critical}


SERVICES = {
    "facebook": {
        "checks": {
            "web": http("https://www.facebook.com/"),
            "mobile": http("https://m.facebook.com/"),
            "graph": http("https://graph.facebook.com/"),
            "dns": {"kind": "dns", "name": "facebook.com", "critical": False},
        }
    },
    # No check marked critical: all of them count as critical, as in the verdict.
    "threads": {
        "checks": {
            "web": http("https://www.threads.net/", critical=False),
            "api": http("https://i.threads.net/", critical=False),
        }
    },
}
CONTROL_KEYS = sorted(("control", name) for name in CONTROLS)


def settled_feed() -> Feed:
    feed = Feed(SERVICES)
    feed.controls(1000.0)
    for key in feed.checks:
        if key[0] != "control":
            feed.result(*key, 1001.0)
    feed.controls(1002.0)
    feed.woken.clear()
    return feed


def siblings_woken(feed: Feed) -> list[tuple[list[tuple[str, str]], float]]:
    return [(keys, gap) for keys, gap in feed.woken if {s for s, _ in keys} != {"control"}]


def test_a_critical_checks_first_failure_wakes_the_other_critical_checks() -> None:
    feed = settled_feed()
    feed.result("facebook", "web", 1003.0, Reason.HTTP_STATUS)
    # Half a re-check (2 s) after their last start at the earliest: bounded like the
    # control checks' wake-up, which happens too.
    assert siblings_woken(feed) == [([("facebook", "graph"), ("facebook", "mobile")], 1.0)]
    assert [sorted(keys) for keys, _ in feed.woken if keys[0][0] == "control"] == [CONTROL_KEYS]


def test_only_the_first_failure_of_a_streak_wakes_them() -> None:
    feed = settled_feed()
    feed.result("facebook", "web", 1003.0, Reason.HTTP_STATUS)
    feed.woken.clear()
    feed.result("facebook", "web", 1005.0, Reason.HTTP_STATUS)
    assert siblings_woken(feed) == []


def test_a_non_critical_failure_wakes_nothing_of_the_service() -> None:
    feed = settled_feed()
    feed.result("facebook", "dns", 1003.0, Reason.DNS_SERVFAIL)
    assert siblings_woken(feed) == []


def test_without_critical_checks_every_check_is_critical() -> None:
    feed = settled_feed()
    feed.result("threads", "api", 1003.0, Reason.HTTP_STATUS)
    assert siblings_woken(feed) == [([("threads", "web")], 1.0)]


def test_nothing_is_woken_while_healthy() -> None:
    feed = settled_feed()
    for at in (1010.0, 1025.0, 1040.0):
        for key in feed.checks:
            feed.result(*key, at)
    assert feed.woken == []


def test_nothing_is_woken_while_the_vantage_is_down() -> None:
    feed = settled_feed()
    for at in (1003.0, 1005.0):
        feed.controls(at, Reason.TCP_UNREACHABLE, which=("by_ip", "by_name"))
    assert not feed.runtime.vantage.up
    feed.woken.clear()
    feed.result("facebook", "web", 1006.0, Reason.TCP_UNREACHABLE)
    assert siblings_woken(feed) == []
