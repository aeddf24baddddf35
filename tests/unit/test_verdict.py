"""Verdict tables: up / degraded / down / unknown, layer ordering, vantage health, since."""

from __future__ import annotations

import dataclasses

import pytest

from exporter.engine.verdict import (
    CheckState,
    Judgement,
    ServiceState,
    VantageHealth,
    counts,
    judge,
    next_state,
    service_verdict,
    vantage_health,
)
from exporter.model import Layer, ProbeResult, Reason, Status
from exporter.spec import ServiceSpec
from tests.conftest import make_check

CONFIRM = 2
UP_VANTAGE = VantageHealth(True, "ok")


def result(reason: Reason = Reason.OK, duration: float = 0.1) -> ProbeResult:
    return ProbeResult(
        success=reason is Reason.OK, reason=reason, duration=duration, started_at=0.0
    )


def ok() -> CheckState:
    return CheckState(result(), 0, 0)


def failing(reason: Reason, times: int = CONFIRM) -> CheckState:
    return CheckState(result(reason), times, 0)


def blocked() -> CheckState:
    return CheckState(result(Reason.BLOCKED_BY_POLICY), 0, 0)


def slow() -> CheckState:
    return CheckState(result(duration=5.0), 0, CONFIRM)


SERVICE = ServiceSpec(
    name="facebook",
    display_name="Facebook",
    checks=(
        make_check("dns", name="dns", qname="facebook.com", critical=False),
        make_check("http", name="web", url="https://www.facebook.com/"),
        make_check("http", name="graph", url="https://graph.facebook.com/me"),
    ),
)


@pytest.mark.parametrize(
    ("states", "status", "layer"),
    [
        pytest.param({"dns": ok(), "web": ok(), "graph": ok()}, Status.UP, Layer.NONE, id="all-up"),
        pytest.param(
            {"dns": ok(), "web": failing(Reason.HTTP_STATUS), "graph": ok()},
            Status.DEGRADED,
            Layer.HTTP,
            id="one-critical-failing-is-degraded",
        ),
        pytest.param(
            {
                "dns": ok(),
                "web": failing(Reason.HTTP_STATUS),
                "graph": failing(Reason.CONTENT_MISMATCH),
            },
            Status.DOWN,
            Layer.HTTP,
            id="all-critical-failing-is-down-at-lowest-layer",
        ),
        pytest.param(
            {
                "dns": failing(Reason.DNS_SERVFAIL),
                "web": failing(Reason.DNS_SERVFAIL),
                "graph": failing(Reason.TCP_TIMEOUT),
            },
            Status.DOWN,
            Layer.DNS,
            id="dns-below-tcp",
        ),
        pytest.param(
            {
                "dns": ok(),
                "web": failing(Reason.TLS_CERT_EXPIRED),
                "graph": failing(Reason.HTTP_TIMEOUT),
            },
            Status.DOWN,
            Layer.TLS,
            id="tls-below-http",
        ),
        pytest.param(
            {"dns": failing(Reason.DNS_SERVFAIL), "web": ok(), "graph": ok()},
            Status.DEGRADED,
            Layer.DNS,
            id="non-critical-failing-is-degraded",
        ),
        pytest.param(
            {"dns": ok(), "web": slow(), "graph": ok()}, Status.DEGRADED, Layer.NONE, id="slow"
        ),
        pytest.param({}, Status.UNKNOWN, Layer.NONE, id="nothing-ran-yet"),
        pytest.param(
            {
                "dns": failing(Reason.BLOCKED_BY_POLICY),
                "web": failing(Reason.BLOCKED_BY_POLICY),
                "graph": failing(Reason.BLOCKED_BY_POLICY),
            },
            Status.UNKNOWN,
            Layer.NONE,
            id="all-blocked-is-unknown-not-down",
        ),
        pytest.param(
            {
                "dns": ok(),
                "web": failing(Reason.HTTP_STATUS),
                "graph": failing(Reason.INTERNAL_ERROR),
            },
            Status.DOWN,
            Layer.HTTP,
            id="internal-error-is-not-a-measurement",
        ),
        pytest.param(
            {"dns": ok(), "web": failing(Reason.HTTP_STATUS), "graph": blocked()},
            Status.DOWN,
            Layer.HTTP,
            id="unmeasured-critical-checks-do-not-hold-up-down",
        ),
    ],
)
def test_service_verdict(states: dict[str, CheckState], status: Status, layer: Layer) -> None:
    keyed = {("facebook", name): state for name, state in states.items()}
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert (verdict.status, verdict.layer) == (status, layer), verdict.detail


@pytest.mark.parametrize(
    ("names", "detail"), [(("web",), "1 check passes"), (("web", "graph"), "2 checks pass")]
)
def test_an_up_detail_counts_its_checks_in_plain_words(names: tuple[str, ...], detail: str) -> None:
    service = dataclasses.replace(
        SERVICE, checks=tuple(c for c in SERVICE.checks if c.name in names)
    )
    keyed = {("facebook", name): ok() for name in names}
    assert service_verdict(service, keyed, UP_VANTAGE, CONFIRM).detail == detail


def test_an_offline_vantage_claims_nothing_about_meta() -> None:
    health = vantage_health(zip(CONTROL, [failing(Reason.TCP_TIMEOUT)] * 3, strict=True), CONFIRM)
    assert not health.up
    assert health.detail == (
        "every control check is failing: the problem is this vantage's network, "
        "so Meta cannot be judged from here"
    )


def test_vantage_down_makes_every_service_unknown() -> None:
    keyed = {("facebook", n): failing(Reason.TCP_TIMEOUT) for n in ("dns", "web", "graph")}
    verdict = service_verdict(SERVICE, keyed, VantageHealth(False, "offline"), CONFIRM)
    assert verdict.status is Status.UNKNOWN
    assert "offline" in verdict.detail


CONTROL = [
    make_check("dns", service="control", name="resolver", qname="example.com"),
    make_check("http", service="control", name="by_ip", url="https://192.0.2.1/"),
    make_check("http", service="control", name="by_name", url="https://example.com/"),
]
TIMEOUT = failing(Reason.TCP_TIMEOUT)


@pytest.mark.parametrize(
    ("states", "up", "settled"),
    [
        pytest.param([ok(), ok(), ok()], True, True, id="all-pass"),
        pytest.param([ok(), TIMEOUT, ok()], True, True, id="one-control-target-down"),
        # Our resolver answers the control name from its cache while the uplink is gone:
        # one of three passing is not a healthy vantage.
        pytest.param([ok(), TIMEOUT, TIMEOUT], False, True, id="one-of-three-is-not-enough"),
        pytest.param([TIMEOUT, TIMEOUT, failing(Reason.DNS_TIMEOUT)], False, True, id="all-fail"),
        pytest.param(
            [ok(), failing(Reason.TCP_TIMEOUT, 1), failing(Reason.DNS_TIMEOUT, 1)],
            True,
            False,
            id="unconfirmed",
        ),
        pytest.param([ok(), TIMEOUT, failing(Reason.TCP_TIMEOUT, 1)], True, False, id="unsettled"),
        pytest.param([blocked(), blocked(), blocked()], False, True, id="all-blocked"),
    ],
)
def test_vantage_health(states: list[CheckState], up: bool, settled: bool) -> None:
    health = vantage_health(zip(CONTROL, states, strict=True), CONFIRM)
    assert (health.up, health.settled, health.known) == (up, settled, True), health.detail


def test_a_vantage_is_not_known_before_every_control_check_ran() -> None:
    health = vantage_health(zip(CONTROL, [ok(), ok(), CheckState()], strict=True), CONFIRM)
    assert not health.known and not health.judging
    keyed = {("facebook", n): ok() for n in ("dns", "web", "graph")}
    verdict = service_verdict(SERVICE, keyed, health, CONFIRM)
    assert verdict.hold and verdict.status is Status.UNKNOWN


def test_most_control_checks_failing_names_the_count() -> None:
    health = vantage_health(zip(CONTROL, [ok(), TIMEOUT, TIMEOUT], strict=True), CONFIRM)
    assert health.detail.startswith("2 of 3 control checks are failing: the problem is")


def test_no_control_checks_means_vantage_assumed_up() -> None:
    health = vantage_health([], CONFIRM)
    assert health.up and "no control checks" in health.detail


def test_since_holds_while_status_holds_and_resets_on_change() -> None:
    from exporter.engine.verdict import Verdict

    first = next_state(None, Verdict(Status.UP, Layer.NONE, ""), now=100.0)
    same = next_state(first, Verdict(Status.UP, Layer.NONE, ""), now=200.0)
    down = next_state(same, Verdict(Status.DOWN, Layer.DNS, ""), now=300.0)
    deeper = next_state(down, Verdict(Status.DOWN, Layer.BGP, ""), now=400.0)
    assert (first.since, same.since, down.since, deeper.since) == (100.0, 100.0, 300.0, 300.0)
    assert deeper.layer is Layer.BGP
    assert isinstance(deeper, ServiceState)


def test_layer_order_is_bottom_up() -> None:
    order = [
        Layer.BGP,
        Layer.DNS,
        Layer.TCP,
        Layer.TLS,
        Layer.QUIC,
        Layer.HTTP,
        Layer.CONTENT,
        Layer.NONE,
    ]
    assert sorted(Layer, key=lambda layer: layer.rank) == order


def test_every_reason_has_a_layer_matching_its_prefix() -> None:
    for reason in Reason:
        prefix = reason.value.split("_")[0]
        if prefix in {"dns", "tcp", "tls", "quic", "http"}:
            assert reason.layer.value == prefix, reason
    assert Reason.CONTENT_MISMATCH.layer is Layer.CONTENT
    assert Reason.BODY_TOO_LARGE.layer is Layer.CONTENT
    assert Reason.BLOCKED_BY_POLICY.layer is Layer.NONE


def test_broken_local_resolver_is_not_blamed_on_meta() -> None:
    """The control DNS check fails while an IP-literal control target still answers: our
    resolver is broken, and Meta's dns-layer failures say nothing about Meta."""
    control = [
        make_check("dns", service="control", name="resolver", qname="example.com"),
        make_check("http", service="control", name="cloudflare", url="https://1.1.1.1/"),
        make_check("http", service="control", name="quad9", url="https://9.9.9.9/"),
    ]
    vantage = vantage_health(
        zip(control, [failing(Reason.DNS_TIMEOUT), ok(), ok()], strict=True), CONFIRM
    )
    assert vantage.up and not vantage.dns_ok
    keyed = {("facebook", n): failing(Reason.DNS_TIMEOUT) for n in ("dns", "web", "graph")}
    verdict = service_verdict(SERVICE, keyed, vantage, CONFIRM)
    assert verdict is not None and verdict.status is Status.UNKNOWN
    assert "resolver" in verdict.detail


QUIC_CONTROL = [
    make_check("dns", service="control", name="resolver", qname="example.com"),
    make_check("http", service="control", name="cloudflare", url="https://1.1.1.1/"),
    make_check("http", service="control", name="google", url="https://www.google.com/"),
    *(
        make_check("http", service="control", name=n, url=f"https://{n}.example/", http_version="3")
        for n in ("google_h3", "cloudflare_h3")
    ),
]
QUIC_SERVICE = ServiceSpec(
    name="instagram",
    display_name="Instagram",
    checks=(
        make_check("http", service="instagram", name="web", url="https://www.instagram.com/"),
        make_check(
            "http",
            service="instagram",
            name="web_h3",
            url="https://www.instagram.com/",
            http_version="3",
            critical=False,
        ),
    ),
)


def test_quic_controls_are_not_in_the_vantage_majority() -> None:
    """A network that drops UDP 443 is online: only QUIC is not judged from it."""
    states = [ok(), ok(), ok(), failing(Reason.QUIC_TIMEOUT), failing(Reason.QUIC_TIMEOUT)]
    vantage = vantage_health(zip(QUIC_CONTROL, states, strict=True), CONFIRM)
    assert vantage.up and vantage.settled and vantage.dns_ok and not vantage.quic_ok
    assert "blocks QUIC" in vantage.detail


@pytest.mark.parametrize(
    ("quic_states", "quic_ok", "settled"),
    [
        pytest.param([ok(), ok()], True, True, id="both-pass"),
        pytest.param([ok(), failing(Reason.QUIC_TIMEOUT)], True, True, id="one-fails"),
        pytest.param(
            [blocked(), failing(Reason.QUIC_REFUSED)], False, True, id="blocked-and-fails"
        ),
        # The first failure of the last passing one: not known yet, so the verdicts hold.
        pytest.param(
            [failing(Reason.QUIC_TIMEOUT), failing(Reason.QUIC_TIMEOUT, 1)],
            True,
            False,
            id="being-confirmed",
        ),
    ],
)
def test_quic_is_blocked_only_when_every_quic_control_fails(
    quic_states: list[CheckState], quic_ok: bool, settled: bool
) -> None:
    vantage = vantage_health(
        zip(QUIC_CONTROL, [ok(), ok(), ok(), *quic_states], strict=True), CONFIRM
    )
    # A QUIC control being confirmed unsettles QUIC only: the vantage stays settled.
    assert (vantage.up, vantage.settled) == (True, True)
    assert (vantage.quic_ok, vantage.quic_settled) == (quic_ok, settled)


def test_quic_failures_on_a_quic_blind_vantage_are_silent_not_failing() -> None:
    states = [ok(), ok(), ok(), failing(Reason.QUIC_TIMEOUT), failing(Reason.QUIC_TIMEOUT)]
    blind = vantage_health(zip(QUIC_CONTROL, states, strict=True), CONFIRM)
    keyed = {("instagram", "web"): ok(), ("instagram", "web_h3"): failing(Reason.QUIC_TIMEOUT)}
    verdict = service_verdict(QUIC_SERVICE, keyed, blind, CONFIRM)
    assert (verdict.status, verdict.hold) == (Status.UP, False), verdict.detail
    assert judge(keyed[("instagram", "web_h3")], blind, CONFIRM) is Judgement.SILENT
    # A failure above QUIC (the handshake completed) still says something about Meta.
    keyed[("instagram", "web_h3")] = failing(Reason.HTTP_STATUS)
    assert service_verdict(QUIC_SERVICE, keyed, blind, CONFIRM).status is Status.DEGRADED


def test_a_quic_control_failing_above_quic_proves_quic_open() -> None:
    """An HTTP/3 control answering 503 completed its QUIC handshake: QUIC is open here."""
    states = [ok(), ok(), ok(), failing(Reason.HTTP_STATUS), failing(Reason.QUIC_TIMEOUT)]
    assert vantage_health(zip(QUIC_CONTROL, states, strict=True), CONFIRM).quic_ok


def test_quic_controls_that_cannot_run_say_so_and_judge_no_quic() -> None:
    states = [ok(), ok(), ok(), blocked(), blocked()]
    vantage = vantage_health(zip(QUIC_CONTROL, states, strict=True), CONFIRM)
    assert not vantage.quic_ok and "cannot run" in vantage.detail


def test_quic_controls_vouch_only_for_http3_checks_and_only_while_quic_is_open() -> None:
    """A Meta TCP failure waits for the other control checks only (an HTTP/3 control's
    next run may take a 5 s timeout); an HTTP/3 check's failure waits for both kinds, and
    QUIC-blind the HTTP/3 controls vouch for nothing (QUIC failures are silent then)."""

    def ran(started: float, reason: Reason = Reason.OK) -> CheckState:
        last = ProbeResult(reason is Reason.OK, reason, 0.1, started)
        return CheckState(last, 0 if reason is Reason.OK else CONFIRM, 0)

    quic_old = ran(90.0, Reason.QUIC_TIMEOUT)
    states = [ran(101.0), ran(101.0), ran(101.0), quic_old, quic_old]
    blind = vantage_health(zip(QUIC_CONTROL, states, strict=True), CONFIRM)
    assert not blind.quic_ok
    assert (blind.verified_for(False), blind.verified_for(True)) == (101.0, 101.0)
    states[3] = ran(90.0)  # one passes: QUIC open, and it vouches again
    open_ = vantage_health(zip(QUIC_CONTROL, states, strict=True), CONFIRM)
    assert (open_.verified_for(False), open_.verified_for(True)) == (101.0, 90.0)
    keyed = {
        ("instagram", "web"): at(95.0, Reason.HTTP_STATUS, CONFIRM),
        ("instagram", "web_h3"): at(95.0, Reason.QUIC_TIMEOUT, CONFIRM),
    }
    verdict = service_verdict(QUIC_SERVICE, keyed, open_, CONFIRM)
    # web is failing (vouched by 101); web_h3 is not yet (its controls last ran at 90).
    assert (verdict.status, verdict.layer) == (Status.DOWN, Layer.HTTP), verdict.detail
    assert "web_h3" not in verdict.detail


def test_only_quic_control_checks_do_not_take_the_vantage_down() -> None:
    only_quic = QUIC_CONTROL[3:]
    states = [failing(Reason.QUIC_TIMEOUT), failing(Reason.QUIC_TIMEOUT)]
    vantage = vantage_health(zip(only_quic, states, strict=True), CONFIRM)
    assert vantage.up and not vantage.quic_ok


def test_meta_quic_failure_with_quic_open_is_degraded_at_quic() -> None:
    vantage = vantage_health(zip(QUIC_CONTROL, [ok()] * 5, strict=True), CONFIRM)
    keyed = {("instagram", "web"): ok(), ("instagram", "web_h3"): failing(Reason.QUIC_TIMEOUT)}
    verdict = service_verdict(QUIC_SERVICE, keyed, vantage, CONFIRM)
    assert (verdict.status, verdict.layer) == (Status.DEGRADED, Layer.QUIC)


def test_a_service_probed_only_over_quic_is_unknown_on_a_quic_blind_vantage() -> None:
    only_h3 = dataclasses.replace(QUIC_SERVICE, checks=QUIC_SERVICE.checks[1:])
    states = [ok(), ok(), ok(), failing(Reason.QUIC_TIMEOUT), failing(Reason.QUIC_TIMEOUT)]
    blind = vantage_health(zip(QUIC_CONTROL, states, strict=True), CONFIRM)
    keyed = {("instagram", "web_h3"): failing(Reason.QUIC_TIMEOUT)}
    verdict = service_verdict(only_h3, keyed, blind, CONFIRM)
    assert verdict.status is Status.UNKNOWN and "blocks QUIC" in verdict.detail


def test_meta_verdict_holds_while_a_control_check_is_being_confirmed() -> None:
    control = [
        make_check("http", service="control", name=n, url="https://example.com/")
        for n in ("a", "b")
    ]
    vantage = vantage_health(
        zip(control, [failing(Reason.TCP_TIMEOUT, 1), ok()], strict=True), CONFIRM
    )
    assert vantage.up and not vantage.settled
    keyed = {("facebook", n): failing(Reason.TCP_TIMEOUT) for n in ("dns", "web", "graph")}
    verdict = service_verdict(SERVICE, keyed, vantage, CONFIRM)
    assert verdict.hold
    previous = ServiceState(Status.UP, Layer.NONE, 5.0, "")
    assert next_state(previous, verdict, now=9.0) == previous


def at(started: float, reason: Reason = Reason.OK, times: int = 0) -> CheckState:
    """A check whose streak of `times` failures began and was confirmed at `started`."""
    last = ProbeResult(reason is Reason.OK, reason, 0.1, started)
    if reason is Reason.OK:
        return CheckState(last)
    return CheckState(last, times, 0, started, started if times >= CONFIRM else None)


def test_a_meta_failure_counts_once_the_control_checks_ran_after_its_confirmation() -> None:
    keyed = {
        ("facebook", n): at(100.0, Reason.HTTP_STATUS, CONFIRM) for n in ("dns", "web", "graph")
    }
    before = VantageHealth(True, "ok", verified_at=99.0)
    after = VantageHealth(True, "ok", verified_at=100.5)
    assert service_verdict(SERVICE, keyed, before, CONFIRM).hold
    assert service_verdict(SERVICE, keyed, after, CONFIRM).status is Status.DOWN


def test_up_needs_a_success() -> None:
    """Unconfirmed failures are no outage, but no evidence of up either: the previous verdict
    holds (unknown at start-up, when every probe so far timed out unconfirmed)."""
    keyed = {
        ("facebook", n): at(10.0, Reason.DNS_TIMEOUT, times=1) for n in ("dns", "web", "graph")
    }
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert verdict.hold
    assert next_state(None, verdict, now=11.0).status is Status.UNKNOWN
    keyed = {("facebook", n): at(10.0) for n in ("dns", "web", "graph")}
    assert service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM).status is Status.UP


@pytest.mark.parametrize("previous", [Status.UP, Status.DOWN, Status.DEGRADED])
def test_a_failure_being_confirmed_holds_the_verdict_either_way(previous: Status) -> None:
    """After the vantage settles, a down service's checks are probed again: while one is
    confirmed and the other still re-checking, it neither recovers nor flaps to degraded."""
    keyed = {
        ("facebook", "dns"): at(10.0),
        ("facebook", "web"): at(10.0, Reason.TCP_TIMEOUT, CONFIRM),
        ("facebook", "graph"): at(10.0, Reason.TCP_TIMEOUT, times=1),
    }
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert verdict.hold and "confirming" in verdict.detail
    held = ServiceState(previous, Layer.TCP, 5.0, "")
    assert next_state(held, verdict, now=11.0) == held


def test_a_critical_check_passing_decides_while_another_is_re_checked() -> None:
    keyed = {
        ("facebook", "dns"): at(10.0, Reason.DNS_SERVFAIL, CONFIRM),
        ("facebook", "web"): at(10.0),
        ("facebook", "graph"): at(10.0, Reason.TCP_TIMEOUT, times=1),
    }
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert (verdict.status, verdict.layer) == (Status.DEGRADED, Layer.DNS)
    keyed[("facebook", "dns")] = at(10.0)
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert (verdict.status, verdict.detail) == (Status.UP, "2 checks pass, 1 re-checking")


RECOVERED = VantageHealth(True, "ok", verified_at=200.0, settled_since=150.0, recovered_at=150.0)
SETTLED = VantageHealth(True, "ok", verified_at=200.0, settled_since=150.0, recovered_at=50.0)


@pytest.mark.parametrize(
    ("state", "vantage", "expected"),
    [
        pytest.param(
            at(160.0, Reason.TCP_TIMEOUT, CONFIRM), RECOVERED, Judgement.FAILING, id="fresh-failing"
        ),
        pytest.param(
            at(140.0, Reason.TCP_TIMEOUT, CONFIRM),
            RECOVERED,
            Judgement.STALE,
            id="failure-before-recovery",
        ),
        pytest.param(at(140.0), RECOVERED, Judgement.STALE, id="success-before-recovery"),
        pytest.param(
            at(140.0, Reason.TCP_TIMEOUT, CONFIRM),
            SETTLED,
            Judgement.STALE,
            id="failure-before-settling",
        ),
        pytest.param(at(140.0), SETTLED, Judgement.PASSING, id="a-success-is-a-success"),
        pytest.param(
            at(160.0, Reason.TCP_TIMEOUT, 1), SETTLED, Judgement.PENDING, id="unconfirmed"
        ),
        pytest.param(
            at(210.0, Reason.TCP_TIMEOUT, CONFIRM), SETTLED, Judgement.PENDING, id="not-vouched-for"
        ),
        pytest.param(CheckState(), SETTLED, Judgement.STALE, id="never-ran"),
        pytest.param(blocked(), SETTLED, Judgement.SILENT, id="blocked"),
    ],
)
def test_judge(state: CheckState, vantage: VantageHealth, expected: Judgement) -> None:
    assert judge(state, vantage, CONFIRM) is expected


def test_failures_from_before_the_vantage_recovered_never_count() -> None:
    """The uplink came back at 150: the timeouts probed before it hold the service (it is
    re-probed at once) instead of reading as Meta down."""
    keyed = {("facebook", n): at(140.0, Reason.TCP_TIMEOUT, 3) for n in ("dns", "web", "graph")}
    verdict = service_verdict(SERVICE, keyed, RECOVERED, CONFIRM)
    assert verdict.hold and "re-probing" in verdict.detail
    keyed = {
        ("facebook", n): at(160.0, Reason.HTTP_STATUS, CONFIRM) for n in ("dns", "web", "graph")
    }
    assert service_verdict(SERVICE, keyed, RECOVERED, CONFIRM).status is Status.DOWN


RESETTLED = dataclasses.replace(SETTLED, settled_since=190.0, verified_at=220.0)
UNSETTLED = dataclasses.replace(SETTLED, settled=False)
RECOVERED_SINCE = dataclasses.replace(RESETTLED, recovered_at=190.0)
OFFLINE = dataclasses.replace(SETTLED, up=False)
OUR_RESOLVER_FAILS = dataclasses.replace(SETTLED, dns_ok=False)
QUIC_BLIND = dataclasses.replace(SETTLED, quic_ok=False)


@pytest.mark.parametrize(
    ("started", "reason", "measured_under", "vouched_by", "counted"),
    [
        pytest.param(160.0, Reason.OK, SETTLED, SETTLED, True, id="settled-success"),
        pytest.param(160.0, Reason.HTTP_STATUS, SETTLED, SETTLED, True, id="settled-failure"),
        pytest.param(140.0, Reason.OK, SETTLED, SETTLED, False, id="before-settling"),
        pytest.param(160.0, Reason.OK, UNSETTLED, SETTLED, False, id="measured-unsettled"),
        pytest.param(210.0, Reason.HTTP_STATUS, SETTLED, SETTLED, False, id="not-yet-vouched"),
        # A control check failed once after the probe, then passed: the vantage settled
        # again at 190. Measured while settled and vouched for, the probe counts, success or
        # failure alike (the runtime voids it only if that check's first run after it failed).
        pytest.param(160.0, Reason.OK, SETTLED, RESETTLED, True, id="blip-success"),
        pytest.param(160.0, Reason.HTTP_STATUS, SETTLED, RESETTLED, True, id="blip-failure"),
        # ...but not when the vantage went down and recovered since.
        pytest.param(160.0, Reason.OK, SETTLED, RECOVERED_SINCE, False, id="down-since"),
        pytest.param(160.0, Reason.BLOCKED_BY_POLICY, SETTLED, SETTLED, False, id="blocked"),
        pytest.param(160.0, Reason.HTTP_STATUS, SETTLED, OFFLINE, False, id="offline"),
        pytest.param(160.0, Reason.DNS_TIMEOUT, SETTLED, OUR_RESOLVER_FAILS, False, id="resolver"),
        pytest.param(
            160.0, Reason.DNS_TIMEOUT, OUR_RESOLVER_FAILS, SETTLED, False, id="resolver-then"
        ),
        pytest.param(160.0, Reason.QUIC_TIMEOUT, SETTLED, QUIC_BLIND, False, id="quic-blind"),
        pytest.param(160.0, Reason.QUIC_TIMEOUT, QUIC_BLIND, SETTLED, False, id="quic-blind-then"),
        pytest.param(160.0, Reason.HTTP_STATUS, QUIC_BLIND, QUIC_BLIND, True, id="quic-blind-http"),
        pytest.param(160.0, Reason.QUIC_TIMEOUT, SETTLED, SETTLED, True, id="quic-open"),
    ],
)
def test_counts_in_the_sli(
    started: float,
    reason: Reason,
    measured_under: VantageHealth,
    vouched_by: VantageHealth,
    counted: bool,
) -> None:
    probe = ProbeResult(reason is Reason.OK, reason, 0.1, started)
    assert counts(probe, measured_under, vouched_by) is counted


@pytest.mark.parametrize("reason", [Reason.OK, Reason.QUIC_TIMEOUT, Reason.HTTP_STATUS])
def test_an_http3_checks_results_count_only_while_quic_is_judgeable(reason: Reason) -> None:
    """Successes too: counting them but not the QUIC failures would bias the SLI to "up"."""
    probe = ProbeResult(reason is Reason.OK, reason, 0.1, 160.0)
    assert not counts(probe, SETTLED, QUIC_BLIND, over_quic=True)
    assert not counts(probe, QUIC_BLIND, SETTLED, over_quic=True)
    assert counts(probe, SETTLED, SETTLED, over_quic=True)


def test_non_critical_check_alone_never_makes_a_service_down() -> None:
    keyed = {
        ("facebook", "dns"): failing(Reason.DNS_SERVFAIL),
        ("facebook", "web"): blocked(),  # the critical checks measured nothing
        ("facebook", "graph"): blocked(),
    }
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert verdict.status is Status.DEGRADED


def test_up_needs_a_critical_check_measured() -> None:
    keyed = {
        ("facebook", "dns"): ok(),
        ("facebook", "web"): blocked(),
        ("facebook", "graph"): blocked(),
    }
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert (verdict.status, verdict.hold) == (Status.UNKNOWN, False)
