"""Real Meta outages replayed against the real exporter (its own process, started by its CLI)
in network namespaces. Each scenario asserts /api/v1/status and /metrics, and records its
detection time (fault -> status change), which must stay within one interval + re-check + 1 s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config

from .conftest import wait_until
from .topology import BGP_PEERS, META_DNS_PREFIXES, NAMESERVERS, Lab

pytestmark = pytest.mark.root

ALL_META = {s.name for s in config.load(None).meta_services}  # the built-in catalogue


def statuses(lab: Lab) -> dict[str, tuple[str, str]]:
    return {
        s["name"]: (s["status"], s["layer"]) for s in lab.status()["services"] if not s["control"]
    }


def samples(lab: Lab, name: str) -> list[Any]:
    for family in text_string_to_metric_families(lab.metrics()):
        if family.name == name:
            return family.samples
    return []


def current(lab: Lab, metric: str, label: str) -> dict[str, str]:
    """service -> the state-set value that is 1 (status or layer) from /metrics."""
    return {s.labels["service"]: s.labels[label] for s in samples(lab, metric) if s.value == 1}


def all_up(lab: Lab) -> bool:
    found = statuses(lab)
    return set(found) == ALL_META and all(status == "up" for status, _ in found.values())


@pytest.fixture(autouse=True)
def healed(lab: Lab) -> None:
    """Every scenario starts from a healthy lab."""
    lab.heal()
    wait_until(lambda: all_up(lab), 30, "every service up after healing")


def detect(
    lab: Lab, changed: Any, log: dict[str, Any], name: str, probe_seconds: float = 0.0
) -> float:
    """Seconds from now (the fault was just injected) until `changed(statuses)` holds.

    `probe_seconds`: how long the failing probe itself takes (a timeout), paid twice: the
    first failure and its re-check."""
    bound = lab.settings.detection_bound + 2 * probe_seconds
    took = wait_until(lambda: changed(statuses(lab)), 20, f"{name} to be detected", step=0.05)
    log[name] = {"seconds": round(took, 2), "bound": round(bound, 2)}
    assert took <= bound, f"{name}: detected after {took:.2f}s"
    return took


def failure_counts(lab: Lab) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels.values()): s.value
        for s in samples(lab, "meta_probe_failures")
        if s.name.endswith("_total")
    }


def test_1_healthy_for_five_rounds(lab: Lab) -> None:
    before = failure_counts(lab)
    probes_before = sum(s.value for s in samples(lab, "meta_probes") if s.name.endswith("_total"))
    time.sleep(5 * lab.settings.interval + 1)
    assert all_up(lab)
    assert set(current(lab, "meta_service_status", "status").values()) == {"up"}
    assert samples(lab, "meta_vantage_up")[0].value == 1
    assert failure_counts(lab) == before, "failures counted while healthy"
    probes_after = sum(s.value for s in samples(lab, "meta_probes") if s.name.endswith("_total"))
    checks = len(samples(lab, "meta_probe_success"))
    assert probes_after - probes_before >= 4 * checks  # at least ~5 rounds really ran


def test_2_october_2021_dns_prefixes_withdrawn(lab: Lab, detection_log: dict[str, Any]) -> None:
    lab.withdraw(*META_DNS_PREFIXES)
    # Authoritative checks fail first: the services degrade at dns while caches still answer.
    # Each of their probes times out on every nameserver (UDP learns nothing from the
    # router's ICMP): four DNS attempts.
    detect(
        lab,
        lambda st: st["facebook"][0] != "up" and st["facebook"][1] == "dns",
        detection_log,
        "2021 authoritative",
        probe_seconds=len(NAMESERVERS) * lab.settings.dns_attempt,
    )
    # Then the resolver's cache expires (TTL 4 s): SERVFAIL everywhere, every product down.
    wait_until(
        lambda: all(v == ("down", "dns") for v in statuses(lab).values()),
        20,
        "every service down at dns",
    )
    assert set(current(lab, "meta_service_failure_layer", "layer").values()) == {"dns"}
    assert samples(lab, "meta_vantage_up")[0].value == 1  # it is Meta, not us
    reasons = {
        s.labels["reason"] for s in samples(lab, "meta_probe_failures") if s.name.endswith("_total")
    }
    assert "dns_servfail" in reasons
    lab.restore(*META_DNS_PREFIXES)
    wait_until(lambda: all_up(lab), 20, "recovery after the routes are back")


def test_3_march_2024_login_fails_while_dns_tcp_tls_fine(
    lab: Lab, detection_log: dict[str, Any]
) -> None:
    lab.http_fault(host="www.facebook.com", path="/login/", status=500)
    lab.http_fault(host="graph.facebook.com", path="/me", status=500)
    detect(lab, lambda st: st["facebook_login"][0] != "up", detection_log, "2024-03 login")
    wait_until(
        lambda: statuses(lab)["facebook_login"] == ("down", "http"), 10, "login down at http"
    )
    # Facebook's own Graph /me check shares the endpoint: degraded, on its own schedule.
    wait_until(lambda: statuses(lab)["facebook"] == ("degraded", "http"), 10, "facebook degraded")
    found = statuses(lab)
    assert all(found[s] == ("up", "none") for s in ALL_META - {"facebook_login", "facebook"}), found


def test_4_december_2024_front_ends_fail(lab: Lab, detection_log: dict[str, Any]) -> None:
    lab.http_fault(host="*", status=503)
    detect(
        lab, lambda st: any(v[0] != "up" for v in st.values()), detection_log, "2024-12 front ends"
    )
    wait_until(
        lambda: all(v == ("down", "http") for v in statuses(lab).values()),
        15,
        "every service down at http",
    )
    assert samples(lab, "meta_vantage_up")[0].value == 1


def test_5_whatsapp_alone_unreachable(lab: Lab, detection_log: dict[str, Any]) -> None:
    lab.dns_fault("whatsapp.com", "servfail")
    lab.dns_fault("whatsapp.net", "servfail")
    lab.withdraw("whatsapp")
    detect(lab, lambda st: st["whatsapp"][0] != "up", detection_log, "whatsapp alone")
    wait_until(lambda: statuses(lab)["whatsapp"] == ("down", "dns"), 15, "whatsapp down at dns")
    found = statuses(lab)
    assert all(found[s] == ("up", "none") for s in ALL_META - {"whatsapp"}), found


def test_6_vantage_uplink_down_blames_nobody_at_meta(
    lab: Lab, detection_log: dict[str, Any]
) -> None:
    lab.uplink(False)
    start = time.monotonic()
    seen: set[str] = set()
    while time.monotonic() - start < 15:
        found = statuses(lab)
        seen |= {status for status, _ in found.values()}
        if all(status == "unknown" for status, _ in found.values()):
            break
        time.sleep(0.05)
    took = time.monotonic() - start
    detection_log["vantage uplink down"] = {
        "seconds": round(took, 2),
        "bound": round(lab.settings.detection_bound, 2),
    }
    assert seen <= {"up", "unknown"}, f"a Meta service was reported {seen - {'up', 'unknown'}}"
    assert all(status == "unknown" for status, _ in statuses(lab).values())
    assert took <= lab.settings.detection_bound
    assert samples(lab, "meta_vantage_up")[0].value == 0
    assert set(current(lab, "meta_service_status", "status").values()) == {"unknown"}
    document = lab.status()
    assert document["vantage"]["up"] is False and "vantage" in document["vantage"]["detail"]
    lab.uplink(True)
    wait_until(lambda: all_up(lab), 20, "recovery after the uplink is back")


def test_7_five_percent_loss_is_never_down(lab: Lab) -> None:
    lab.loss(5)
    start = time.monotonic()
    worst: set[str] = set()
    alarms: list[str] = []  # what a false alarm said, to tell why
    while time.monotonic() - start < 6 * lab.settings.interval:
        for service in lab.status()["services"]:
            status = service.get("status")
            worst.add(status)
            if status in ("down", "unknown"):
                alarms.append(f"{service['name']}: {status} ({service.get('detail')})")
        time.sleep(0.2)
    assert "down" not in worst and "unknown" not in worst, alarms[:5]


def test_8_slow_front_end_is_degraded_not_down(lab: Lab, detection_log: dict[str, Any]) -> None:
    lab.http_fault(host="www.instagram.com", delay=0.35)  # threshold 0.25 s, timeout 0.7 s
    detect(lab, lambda st: st["instagram"] == ("degraded", "none"), detection_log, "slow front end")
    time.sleep(2 * lab.settings.interval)
    found = statuses(lab)
    assert found["instagram"] == ("degraded", "none")
    assert all(found[s] == ("up", "none") for s in ALL_META - {"instagram"}), found


def test_9_certificates_expiring_and_expired(lab: Lab, detection_log: dict[str, Any]) -> None:
    lab.cert("www.messenger.com", "expiring", days=3)
    lab.cert("www.threads.com", "expired")
    detect(lab, lambda st: st["threads"][0] != "up", detection_log, "expired certificate")
    wait_until(lambda: statuses(lab)["threads"] == ("down", "tls"), 10, "threads down at tls")

    def messenger_expiry() -> float:
        for sample in samples(lab, "meta_probe_tls_cert_expiry_timestamp_seconds"):
            if sample.labels["service"] == "messenger" and sample.labels["check"] == "web":
                return float(sample.value)
        return 0.0

    # The messenger check sees the new certificate on its next probe (its own schedule).
    three_days = time.time() + 3 * 86400
    wait_until(lambda: abs(messenger_expiry() - three_days) < 3600, 10, "the 3-day expiry exported")
    reasons = {
        (s.labels["check"], s.labels["reason"])
        for s in samples(lab, "meta_probe_failures")
        if s.labels["service"] == "threads" and s.name.endswith("_total")
    }
    assert ("web", "tls_cert_expired") in reasons
    assert statuses(lab)["messenger"] == ("up", "none")


def test_10_october_2021_replay_with_bgp_shows_bgp_first_then_dns(
    lab: Lab, detection_log: dict[str, Any]
) -> None:
    """The full 2021 sequence with the RIS Live feed: most peers withdraw Meta's DNS prefixes
    and the routes go. Every service is down at bgp at once, while recursive DNS still
    answers from the resolver's cache; DNS then fails under it (SERVFAIL) and bgp stays the
    named cause. When BGP is back but DNS still fails (2021: routes ~21:00 UTC, service
    ~22:45), the layer becomes dns; then everything recovers."""
    lab.bgp(BGP_PEERS[:8], withdraw=META_DNS_PREFIXES)
    lab.withdraw(*META_DNS_PREFIXES)
    detect(
        lab,
        lambda st: all(v == ("down", "bgp") for v in st.values()),
        detection_log,
        "2021 bgp withdrawal",
    )
    checks = {(c["name"], s["name"]): c for s in lab.status()["services"] for c in s["checks"]}
    recursive = checks[("dns", "facebook")]["last_result"]
    assert recursive["success"], "recursive DNS already failing: the bgp signal was not first"
    withdrawn = {s.labels["prefix"]: s.value for s in samples(lab, "meta_bgp_prefix_withdrawn")}
    assert withdrawn == {"10.129.30.0/23": 1.0, "10.185.218.0/23": 1.0}
    feeds_up = {s.labels["feed"]: s.value for s in samples(lab, "meta_feed_up")}
    assert feeds_up.get("bgp_seed") == 1.0, feeds_up  # the looking glass answered at connect

    # The resolver's cache expires: DNS fails under the withdrawn prefixes; bgp stays the cause.
    def dns_servfail() -> bool:
        for service in lab.status()["services"]:
            if service["name"] == "facebook":
                dns = next(c for c in service["checks"] if c["name"] == "dns")
                return (dns["last_result"] or {}).get("reason") == "dns_servfail"
        return False

    wait_until(dns_servfail, 20, "recursive DNS to fail once the cache expires")
    assert all(v == ("down", "bgp") for v in statuses(lab).values())

    # BGP is back, DNS is not yet: now the layer is dns.
    lab.bgp(BGP_PEERS[:8], announce=META_DNS_PREFIXES)
    wait_until(
        lambda: all(v == ("down", "dns") for v in statuses(lab).values()),
        10,
        "the layer to move from bgp to dns",
    )
    assert samples(lab, "meta_vantage_up")[0].value == 1
    lab.restore(*META_DNS_PREFIXES)
    wait_until(lambda: all_up(lab), 20, "recovery after the routes are back")
