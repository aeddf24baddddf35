"""The QUIC control ("is it us" for QUIC) in the real Runtime, results fed by hand.

Found by the verdict model (tests/unit/test_verdict_model.py): on a QUIC-blind vantage a
Meta HTTP/3 check kept a streak of silent QUIC failures, so the first DNS failure after it
(our resolver dying) read as confirmed at once: "Instagram degraded at dns" from one probe.
"""

from __future__ import annotations

from exporter.model import Layer, Reason, Status
from tests.unit.runtime_feed import CONTROLS, Feed

H3 = {"http_version": "3", "valid_status_codes": ["<500"]}
SERVICES = {
    "instagram": {
        "checks": {
            "web": {
                "kind": "http",
                "url": "https://www.instagram.com/",
                "valid_status_codes": ["<500"],
            },
            "web_h3": {
                "kind": "http",
                "url": "https://www.instagram.com/",
                "critical": False,
                **H3,
            },
        }
    }
}
QUIC_CONTROLS = {
    "google_h3": {"kind": "http", "url": "https://www.google.com/", **H3},
    "cloudflare_h3": {"kind": "http", "url": "https://www.cloudflare.com/", **H3},
}


def feed() -> Feed:
    return Feed(SERVICES, QUIC_CONTROLS)


def controls(f: Feed, at: float, quic: Reason = Reason.OK) -> None:
    f.controls(at, which=CONTROLS)
    f.controls(at, quic, which=tuple(QUIC_CONTROLS))


def instagram(f: Feed, at: float, h3: Reason = Reason.OK) -> None:
    f.result("instagram", "web", at)
    f.result("instagram", "web_h3", at, h3)


def status(f: Feed) -> tuple[Status, Layer]:
    state = f.runtime.services["instagram"]
    return state.status, state.layer


def quic_blind(f: Feed, at: float) -> float:
    """Healthy, then UDP 443 dropped: the HTTP/3 controls fail twice (confirmed)."""
    controls(f, at)
    instagram(f, at + 1)
    assert status(f) == (Status.UP, Layer.NONE)
    controls(f, at + 15, Reason.QUIC_TIMEOUT)
    controls(f, at + 17, Reason.QUIC_TIMEOUT)
    assert f.runtime.vantage.up and not f.runtime.vantage.quic_ok
    return at + 20


def test_a_meta_quic_failure_with_quic_open_is_degraded_at_quic() -> None:
    f = feed()
    controls(f, 0)
    instagram(f, 1)
    instagram(f, 16, Reason.QUIC_TIMEOUT)
    controls(f, 17)
    instagram(f, 18, Reason.QUIC_TIMEOUT)
    controls(f, 19)
    assert status(f) == (Status.DEGRADED, Layer.QUIC)


def test_quic_failures_on_a_quic_blind_vantage_build_no_streak() -> None:
    f = feed()
    at = quic_blind(f, 0)
    for n in range(5):  # silent: no streak, and no fast re-check asked for
        instagram(f, at + 15 * n, Reason.QUIC_TIMEOUT)
        assert status(f) == (Status.UP, Layer.NONE)
    record = f.runtime.store.records[("instagram", "web_h3")]
    assert record.consecutive_failures == 0 and record.suspect_streak == 0
    # Our resolver starts failing: the next failure is at dns, and it is a first failure,
    # not the sixth of a streak.
    f.result("instagram", "web_h3", at + 80, Reason.DNS_TIMEOUT)
    assert record.consecutive_failures == 1
    controls(f, at + 81, Reason.QUIC_TIMEOUT)
    assert status(f) == (Status.UP, Layer.NONE)


def test_going_quic_blind_without_a_re_check_still_restarts_the_streaks() -> None:
    """The HTTP/3 controls blocked by the egress policy: QUIC-blind at once, no unconfirmed
    failure in between. A QUIC failure seen just before must not confirm a DNS one after."""
    f = feed()
    controls(f, 0)
    instagram(f, 1)
    instagram(f, 16, Reason.QUIC_TIMEOUT)  # QUIC still open: a first failure, pending
    controls(f, 17, Reason.BLOCKED_BY_POLICY)
    assert not f.runtime.vantage.quic_ok
    f.result("instagram", "web_h3", 18, Reason.DNS_TIMEOUT)
    controls(f, 19, Reason.BLOCKED_BY_POLICY)
    assert f.runtime.store.records[("instagram", "web_h3")].consecutive_failures == 1
    assert status(f) == (Status.UP, Layer.NONE)


def test_quic_open_again_probes_meta_quic_afresh() -> None:
    f = feed()
    at = quic_blind(f, 0)
    instagram(f, at, Reason.QUIC_TIMEOUT)
    f.woken.clear()
    controls(f, at + 15)  # UDP 443 open again
    assert f.runtime.vantage.quic_ok
    woken = {key for keys, _ in f.woken for key in keys}
    assert ("instagram", "web_h3") in woken  # its failure, probed while blind, is stale
    assert status(f) == (Status.UP, Layer.NONE)


def test_quic_blocked_or_open_again_restarts_only_the_http3_checks() -> None:
    """A confirmed Meta failure over TCP stays failing when QUIC becomes blind: only the
    HTTP/3 checks are judged afresh (alerts on meta_check_failing must not reset)."""
    f = feed()
    controls(f, 0)
    instagram(f, 1)
    f.result("instagram", "web", 16, Reason.HTTP_STATUS)
    controls(f, 17)
    f.result("instagram", "web", 18, Reason.HTTP_STATUS)
    controls(f, 19)
    record = f.runtime.store.records[("instagram", "web")]
    assert status(f) == (Status.DOWN, Layer.HTTP) and record.counted_failing
    controls(f, 30, Reason.QUIC_TIMEOUT)
    controls(f, 32, Reason.QUIC_TIMEOUT)
    assert not f.runtime.vantage.quic_ok
    assert record.consecutive_failures == 2 and record.counted_failing
    assert status(f) == (Status.DOWN, Layer.HTTP)


def test_the_http3_controls_stay_out_of_our_own_error_ratio() -> None:
    f = feed()
    controls(f, 0)  # not counted: the vantage is not known before every control ran
    controls(f, 15, Reason.QUIC_TIMEOUT)
    controls(f, 30, Reason.QUIC_TIMEOUT)
    records = f.runtime.store.records
    assert records[("control", "resolver")].judged_total == 2
    assert all(records[("control", name)].judged_total == 0 for name in QUIC_CONTROLS)


def test_a_quic_control_blip_holds_only_the_services_failing_over_quic() -> None:
    """One HTTP/3 control fails once: TCP verdicts go on (a Meta TCP failure is confirmed
    and reported), while a service with a failing HTTP/3 check holds its verdict."""
    services = {
        **SERVICES,
        "facebook": {
            "checks": {
                "web": {
                    "kind": "http",
                    "url": "https://www.facebook.com/",
                    "valid_status_codes": ["<500"],
                }
            }
        },
    }
    f = Feed(services, QUIC_CONTROLS)
    controls(f, 0)
    instagram(f, 1)
    f.result("facebook", "web", 1)
    f.result("control", "google_h3", 10, Reason.QUIC_TIMEOUT)  # a blip: unconfirmed
    assert f.runtime.vantage.settled and not f.runtime.vantage.quic_settled
    f.result("facebook", "web", 16, Reason.HTTP_STATUS)
    f.controls(17, which=CONTROLS)
    f.result("facebook", "web", 18, Reason.HTTP_STATUS)
    f.controls(19, which=CONTROLS)
    assert f.runtime.services["facebook"].status is Status.DOWN
    instagram(f, 20, Reason.QUIC_TIMEOUT)
    assert status(f) == (Status.UP, Layer.NONE)  # held: QUIC is being re-verified
