"""Verdict tables: up / degraded / down / unknown, layer ordering, vantage health, since."""

from __future__ import annotations

import dataclasses

import pytest

from exporter.model import Layer, ProbeResult, Reason, Status
from exporter.spec import ServiceSpec
from exporter.verdict import (
    CheckState,
    ServiceState,
    VantageHealth,
    next_state,
    service_verdict,
    vantage_health,
)
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
            {
                "dns": ok(),
                "web": failing(Reason.HTTP_STATUS, times=1),
                "graph": failing(Reason.HTTP_STATUS, 1),
            },
            Status.UP,
            Layer.NONE,
            id="unconfirmed-failures-are-not-an-outage",
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
            {"web": failing(Reason.HTTP_STATUS)},
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
    health = vantage_health(zip(CONTROL, [failing(Reason.TCP_TIMEOUT)] * 2, strict=True), CONFIRM)
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
    make_check("http", service="control", name=n, url="https://example.com/") for n in ("a", "b")
]


@pytest.mark.parametrize(
    ("states", "up"),
    [
        pytest.param([ok(), ok()], True, id="all-pass"),
        pytest.param([ok(), failing(Reason.TCP_TIMEOUT)], True, id="one-control-target-down"),
        pytest.param(
            [failing(Reason.TCP_TIMEOUT), failing(Reason.DNS_TIMEOUT)], False, id="all-fail"
        ),
        pytest.param(
            [failing(Reason.TCP_TIMEOUT, 1), failing(Reason.DNS_TIMEOUT, 1)], True, id="unconfirmed"
        ),
        pytest.param(
            [failing(Reason.BLOCKED_BY_POLICY, 1), failing(Reason.BLOCKED_BY_POLICY, 1)],
            False,
            id="all-blocked",
        ),
        pytest.param([CheckState(), CheckState()], True, id="not-run-yet"),
    ],
)
def test_vantage_health(states: list[CheckState], up: bool) -> None:
    assert vantage_health(zip(CONTROL, states, strict=True), CONFIRM).up is up


def test_no_control_checks_means_vantage_assumed_up() -> None:
    health = vantage_health([], CONFIRM)
    assert health.up and "no control checks" in health.detail


def test_since_holds_while_status_holds_and_resets_on_change() -> None:
    from exporter.verdict import Verdict

    first = next_state(None, Verdict(Status.UP, Layer.NONE, ""), now=100.0)
    same = next_state(first, Verdict(Status.UP, Layer.NONE, ""), now=200.0)
    down = next_state(same, Verdict(Status.DOWN, Layer.DNS, ""), now=300.0)
    deeper = next_state(down, Verdict(Status.DOWN, Layer.BGP, ""), now=400.0)
    assert (first.since, same.since, down.since, deeper.since) == (100.0, 100.0, 300.0, 300.0)
    assert deeper.layer is Layer.BGP
    assert isinstance(deeper, ServiceState)


def test_layer_order_is_bottom_up() -> None:
    order = [Layer.BGP, Layer.DNS, Layer.TCP, Layer.TLS, Layer.HTTP, Layer.CONTENT, Layer.NONE]
    assert sorted(Layer, key=lambda layer: layer.rank) == order


def test_every_reason_has_a_layer_matching_its_prefix() -> None:
    for reason in Reason:
        prefix = reason.value.split("_")[0]
        if prefix in {"dns", "tcp", "tls", "http"}:
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
    ]
    vantage = vantage_health(
        zip(control, [failing(Reason.DNS_TIMEOUT), ok()], strict=True), CONFIRM
    )
    assert vantage.up and not vantage.dns_ok
    keyed = {("facebook", n): failing(Reason.DNS_TIMEOUT) for n in ("dns", "web", "graph")}
    verdict = service_verdict(SERVICE, keyed, vantage, CONFIRM)
    assert verdict is not None and verdict.status is Status.UNKNOWN
    assert "resolver" in verdict.detail


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
    assert service_verdict(SERVICE, keyed, vantage, CONFIRM) is None
    previous = ServiceState(Status.UP, Layer.NONE, 5.0, "")
    assert next_state(previous, None, now=9.0) == previous


def test_meta_failure_counts_only_once_the_vantage_was_verified_after_it_began() -> None:
    failing_late = CheckState(result(Reason.HTTP_STATUS), CONFIRM, 0, failing_since=100.0)
    keyed = {("facebook", n): failing_late for n in ("dns", "web", "graph")}
    before = VantageHealth(True, "ok", verified_at=99.0)
    after = VantageHealth(True, "ok", verified_at=100.5)
    assert service_verdict(SERVICE, keyed, before, CONFIRM).status is Status.UP  # type: ignore[union-attr]
    assert service_verdict(SERVICE, keyed, after, CONFIRM).status is Status.DOWN  # type: ignore[union-attr]


def test_non_critical_check_alone_never_makes_a_service_down() -> None:
    keyed = {("facebook", "dns"): failing(Reason.DNS_SERVFAIL)}  # criticals not measured yet
    verdict = service_verdict(SERVICE, keyed, UP_VANTAGE, CONFIRM)
    assert verdict is not None and verdict.status is Status.DEGRADED
