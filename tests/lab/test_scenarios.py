"""Real Meta outages replayed against the real exporter (its own process, started by its CLI)
in network namespaces. Each scenario asserts /api/v1/status and /metrics, and records its
detection time (fault -> status change), which must stay within one interval + re-check + 1 s.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import loader

from .conftest import wait_until
from .topology import BGP_PEERS, META_DNS_PREFIXES, NAMESERVERS, Lab

pytestmark = pytest.mark.root

ALL_META = {s.name for s in loader.load(None).meta_services}  # the built-in catalogue
SYN_RETRANSMIT = 1.0  # Linux's initial TCP retransmission timeout (TCP_TIMEOUT_INIT)


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
    # The router answers a withdrawn route with "net unreachable" at most once a second after
    # a burst of five (the kernel's ip_error limit, net.ipv4.route.error_cost: host-wide, not
    # per namespace), as real routers limit theirs. A SYN that gets no answer is sent again
    # after TCP's initial RTO and is answered then: the probe and its re-check may each pay it.
    detect(
        lab,
        lambda st: st["whatsapp"][0] != "up",
        detection_log,
        "whatsapp alone",
        probe_seconds=SYN_RETRANSMIT,
    )
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


# -- QUIC (HTTP/3): Meta's QUIC edge, a network that blocks it, a slow handshake ------------

QUIC_SERVICES = {
    s.name for s in loader.load(None).meta_services if any(c.over_quic for c in s.checks)
}


def quic_ok(lab: Lab) -> bool:
    return bool(lab.status()["vantage"]["quic_ok"])


def test_11_meta_quic_edge_down_is_degraded_at_quic(
    lab: Lab, detection_log: dict[str, Any]
) -> None:
    """Meta's QUIC edge goes silent while TCP is fine: every service probed over HTTP/3 is
    degraded at quic (not down: its apps fall back to TCP), the others stay up, and this
    vantage's QUIC is fine (its HTTP/3 control checks pass)."""
    assert {"facebook", "instagram", "whatsapp", "messenger", "threads"} <= QUIC_SERVICES
    before = failure_counts(lab)
    lab.quic_edge_down(True)
    detect(
        lab,
        lambda st: all(st[s] == ("degraded", "quic") for s in QUIC_SERVICES),
        detection_log,
        "Meta QUIC edge down",
        probe_seconds=lab.settings.timeout,  # a silent QUIC handshake times out
    )
    found = statuses(lab)
    assert all(found[s] == ("up", "none") for s in ALL_META - QUIC_SERVICES), found
    assert quic_ok(lab) and samples(lab, "meta_vantage_quic_ok")[0].value == 1
    failed = {
        key: count - before.get(key, 0.0)
        for key, count in failure_counts(lab).items()
        if count > before.get(key, 0.0)
    }
    # failure_counts' keys are (check, reason, service).
    assert {reason for (check, reason, _) in failed if check.endswith("_h3")} == {"quic_timeout"}, (
        failed
    )
    assert all(check.endswith("_h3") for (check, _, service) in failed if service != "control")
    lab.quic_edge_down(False)
    wait_until(lambda: all_up(lab), 20, "recovery once Meta's QUIC edge answers")


def test_12_quic_blocked_on_the_vantage_blames_nobody_at_meta(
    lab: Lab, detection_log: dict[str, Any]
) -> None:
    """The vantage's network starts dropping UDP 443 (an office firewall): every HTTP/3
    probe times out, Meta's and the controls' alike. Nothing is blamed on Meta at any moment,
    the vantage stays up, and it says it is QUIC-blind; when UDP 443 opens again it says so
    too, again with no service leaving "up" on the way."""
    lab.block_quic(True)
    start = time.monotonic()
    seen: set[tuple[str, str]] = set()

    def watch(until: Any, timeout: float) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            seen.update(statuses(lab).values())
            if until():
                return time.monotonic() - began
            time.sleep(0.05)
        pytest.fail(f"not seen within {timeout:.0f}s; statuses seen: {sorted(seen)}")

    # The first failure plus its re-check, each a full timeout, for the controls and then
    # Meta's checks, within a round: the bound of a timed-out failure (see detect()).
    bound = lab.settings.detection_bound + 2 * lab.settings.timeout
    took = watch(lambda: not quic_ok(lab), bound + 5)
    detection_log["vantage blocks QUIC"] = {"seconds": round(took, 2), "bound": round(bound, 2)}
    assert took <= bound, f"QUIC-blind after {took:.2f}s"
    document = lab.status()
    assert document["vantage"]["up"] and "blocks QUIC" in document["vantage"]["detail"]
    assert "blocks QUIC" in document["headline"]["text"]
    assert document["headline"]["level"] == "ok", document["headline"]
    assert samples(lab, "meta_vantage_quic_ok")[0].value == 0
    assert samples(lab, "meta_vantage_up")[0].value == 1
    # Two more rounds in the blocked state: Meta's HTTP/3 checks keep failing, unjudged.
    watch(lambda: time.monotonic() - start > took + 2 * lab.settings.interval, 10)
    failing = [s.labels for s in samples(lab, "meta_check_failing") if s.value]
    assert failing == [], failing
    lab.block_quic(False)
    watch(lambda: quic_ok(lab), bound + 5)
    watch(lambda: all_up(lab) and quic_ok(lab), 20)
    # Recovered: the headline no longer mentions QUIC, and Meta was never blamed.
    assert "QUIC" not in lab.status()["headline"]["text"]
    assert seen <= {("up", "none")}, f"a Meta service left up: {sorted(seen)}"


def test_13_slow_quic_handshake_is_degraded_slow(lab: Lab, detection_log: dict[str, Any]) -> None:
    """Every QUIC datagram reaching Meta's edge waits 0.15 s: an HTTP/3 handshake (two round
    trips at least) takes longer than the 0.25 s threshold, while TCP is fast. The services
    probed over HTTP/3 are degraded as slow (no failing layer), and the time is connect."""
    lab.quic_delay(0.15)
    detect(
        lab,
        lambda st: all(st[s] == ("degraded", "none") for s in QUIC_SERVICES),
        detection_log,
        "slow QUIC handshake",
    )
    found = statuses(lab)
    assert all(found[s] == ("up", "none") for s in ALL_META - QUIC_SERVICES), found
    instagram = next(s for s in lab.status()["services"] if s["name"] == "instagram")
    slow = re.findall(r"(\w+) [\d.]+s > ", instagram["detail"])  # "slow: api_h3 0.33s > 0.25s"
    assert slow and all(name.endswith("_h3") for name in slow), instagram["detail"]
    result = next(c for c in instagram["checks"] if c["name"] == slow[0])["last_result"]
    assert result["success"] and result["http_version"] == "3"
    assert result["phases"]["connect"] >= 0.15, result["phases"]
    assert quic_ok(lab)
