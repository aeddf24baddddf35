"""Verdicts, as pure functions: check states -> vantage health -> service status and layer.

Rules (README "How the verdict is reached"):
- A check is *failing* only when its last result failed and that was confirmed
  (confirm_failures measured failures in a row: the first failure plus its fast re-check),
  so a single lost packet is never an outage; *slow* likewise for slow successes.
  Blocked or crashed probes measure nothing and neither extend nor break a streak.
- The vantage is down when every control check (non-Meta targets) is failing — or was
  blocked by the egress policy: then nothing can be said about Meta, and every Meta
  service is UNKNOWN rather than DOWN. While a control check has an unconfirmed failure
  the Meta verdicts hold still, and a Meta failure counts only once every control check
  has run again since it began (the scheduler re-runs them at once), so a dying uplink is
  never reported as Meta going down first. When the control DNS checks fail, our own
  resolver is broken and DNS failures are not held against Meta.
- A service is DOWN when all its measured critical checks are failing (all its checks,
  if none is marked critical), DEGRADED when any check is failing or slow, UP otherwise,
  UNKNOWN when nothing measured it.
- A service whose DNS prefixes (dns_prefixes) are all withdrawn from BGP by most peers is
  DOWN at layer bgp at once, before resolvers' caches expire and DNS starts failing; it
  stays at bgp, the root cause, while DNS and the layers above fail after it.
- Otherwise the failing layer is the lowest layer among the failing checks
  (bgp < dns < tcp < tls < http < content).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import Layer, ProbeResult, Status
from .spec import CheckSpec, ServiceSpec


@dataclass(frozen=True, slots=True)
class CheckState:
    """What the verdict needs to know about one check."""

    last: ProbeResult | None = None
    consecutive_failures: int = 0
    consecutive_slow: int = 0
    # started_at of the first failure of the current streak.
    failing_since: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    layer: Layer
    detail: str


@dataclass(frozen=True, slots=True)
class ServiceState:
    status: Status
    layer: Layer
    since: float
    detail: str


@dataclass(frozen=True, slots=True)
class VantageHealth:
    up: bool
    detail: str
    # False while a control check has an unconfirmed failure: Meta verdicts hold still.
    settled: bool = True
    # False when the vantage's own resolver fails: DNS failures say nothing about Meta.
    dns_ok: bool = True
    # When every control check last ran: a Meta failure that began later is not yet
    # known to be Meta's (+inf without control checks: nothing to wait for).
    verified_at: float = math.inf


def is_failing(state: CheckState, confirm: int) -> bool:
    last = state.last
    return (
        last is not None
        and not last.success
        and last.measured
        and state.consecutive_failures >= confirm
    )


def is_slow(state: CheckState, confirm: int) -> bool:
    return state.last is not None and state.last.success and state.consecutive_slow >= confirm


def _blocked_or_failing(state: CheckState, confirm: int) -> bool:
    last = state.last
    if last is None or last.success:
        return False
    return not last.measured or state.consecutive_failures >= confirm


def _unconfirmed_failure(state: CheckState, confirm: int) -> bool:
    last = state.last
    return (
        last is not None
        and not last.success
        and last.measured
        and state.consecutive_failures < confirm
    )


def vantage_health(control: Iterable[tuple[CheckSpec, CheckState]], confirm: int) -> VantageHealth:
    checks = list(control)
    if not checks:
        return VantageHealth(True, "no control checks configured: the vantage is assumed healthy")
    if all(state.last is None for _, state in checks):
        return VantageHealth(True, "control checks have not run yet", verified_at=-math.inf)
    verified_at = min((s.last.started_at if s.last else -math.inf) for _, s in checks)
    settled = not any(_unconfirmed_failure(state, confirm) for _, state in checks)
    resolver_checks = [state for spec, state in checks if spec.kind == "dns"]
    dns_ok = not resolver_checks or not all(
        _blocked_or_failing(s, confirm) for s in resolver_checks
    )
    down = [spec for spec, state in checks if _blocked_or_failing(state, confirm)]
    if len(down) == len(checks):
        blocked = all(state.last is not None and not state.last.measured for _, state in checks)
        why = "blocked by the egress policy" if blocked else "failing"
        return VantageHealth(
            False,
            f"every control check is {why}: the problem is this vantage's network, "
            "so Meta cannot be judged from here",
            settled,
            dns_ok,
            verified_at,
        )
    if not dns_ok:
        detail = "this vantage's resolver fails: DNS failures are not blamed on Meta"
    elif down:
        detail = f"{len(checks) - len(down)} of {len(checks)} control checks pass"
    else:
        detail = "control checks pass"
    return VantageHealth(True, detail, settled, dns_ok, verified_at)


def _lowest_layer(results: Iterable[ProbeResult]) -> Layer:
    return min((r.layer for r in results), key=lambda layer: layer.rank, default=Layer.NONE)


def _says_nothing_about_meta(state: CheckState, vantage: VantageHealth) -> bool:
    """Results that cannot be held against Meta: not measured, or DNS while our resolver fails."""
    last = state.last
    if last is None or not last.measured:
        return True
    return not last.success and last.layer is Layer.DNS and not vantage.dns_ok


def service_verdict(
    service: ServiceSpec,
    states: Mapping[tuple[str, str], CheckState],
    vantage: VantageHealth,
    confirm: int,
    withdrawn: frozenset[str] = frozenset(),
) -> Verdict | None:
    """The service's verdict, or None to hold the previous one (the vantage is being re-checked).

    `withdrawn`: prefixes the BGP feed sees withdrawn by most peers (empty: none, or no feed).
    """
    if not vantage.up:
        return Verdict(Status.UNKNOWN, Layer.NONE, "not judged: " + vantage.detail)
    if not vantage.settled:
        return None
    if service.dns_prefixes and withdrawn.issuperset(service.dns_prefixes):
        return _bgp_verdict(service, states, confirm)
    pairs = [(spec, states.get(spec.key, CheckState())) for spec in service.checks]
    measured = [(spec, s) for spec, s in pairs if not _says_nothing_about_meta(s, vantage)]
    if not measured:
        if not vantage.dns_ok and any(s.last is not None for _, s in pairs):
            return Verdict(Status.UNKNOWN, Layer.NONE, "not judged: " + vantage.detail)
        ran = any(s.last is not None for _, s in pairs)
        return Verdict(
            Status.UNKNOWN,
            Layer.NONE,
            "every check was blocked or could not run" if ran else "no probe has finished yet",
        )

    def failing(state: CheckState) -> bool:
        # Confirmed, and the vantage was verified healthy after the failure began.
        return is_failing(state, confirm) and (state.failing_since or 0.0) <= vantage.verified_at

    failed = [(spec, s) for spec, s in measured if failing(s)]
    has_critical = any(spec.critical for spec in service.checks)
    critical = [(spec, s) for spec, s in measured if spec.critical or not has_critical]
    layer = _lowest_layer(s.last for _, s in failed if s.last is not None)
    if failed and critical and all(failing(s) for _, s in critical):
        names = ", ".join(spec.name for spec, _ in failed)
        return Verdict(Status.DOWN, layer, f"failing at {layer.value}: {names}")
    if failed:
        names = ", ".join(f"{spec.name} ({s.last.reason.value})" for spec, s in failed if s.last)
        return Verdict(
            Status.DEGRADED, layer, f"{len(failed)} of {len(measured)} checks failing: {names}"
        )
    slow = [(spec, s) for spec, s in measured if is_slow(s, confirm)]
    if slow:
        names = ", ".join(
            f"{spec.name} {s.last.duration:.2f}s > {spec.latency_threshold:g}s"
            for spec, s in slow
            if s.last
        )
        return Verdict(Status.DEGRADED, Layer.NONE, f"slow: {names}")
    passing = "1 check passes" if len(measured) == 1 else f"{len(measured)} checks pass"
    return Verdict(Status.UP, Layer.NONE, passing)


def _bgp_verdict(
    service: ServiceSpec, states: Mapping[tuple[str, str], CheckState], confirm: int
) -> Verdict:
    failing = [
        spec.name
        for spec in service.checks
        if is_failing(states.get(spec.key, CheckState()), confirm)
    ]
    then = f"; also failing: {', '.join(failing)}" if failing else "; DNS still answers from caches"
    prefixes = ", ".join(service.dns_prefixes)
    return Verdict(
        Status.DOWN, Layer.BGP, f"its DNS prefixes are withdrawn from BGP ({prefixes}){then}"
    )


def next_state(previous: ServiceState | None, verdict: Verdict | None, now: float) -> ServiceState:
    """Carry `since` over while the status holds; a new status starts a new period."""
    if verdict is None:  # hold: the vantage is being re-verified
        return previous or ServiceState(
            Status.UNKNOWN, Layer.NONE, now, "waiting for the control checks"
        )
    if previous is not None and previous.status is verdict.status:
        return ServiceState(verdict.status, verdict.layer, previous.since, verdict.detail)
    return ServiceState(verdict.status, verdict.layer, now, verdict.detail)
