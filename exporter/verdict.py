"""Verdicts, as pure functions: check states -> vantage health -> service status and layer.

Rules (README "How the verdict is reached"):
- A check is *failing* only when its last result failed and that was confirmed
  (confirm_failures results in a row, i.e. the first failure plus its fast re-check), so a
  single lost packet is never an outage. It is *slow* when its last confirm_failures
  successful results all took longer than its latency threshold.
- The vantage is down when every control check (non-Meta targets) is failing — or was
  blocked by the egress policy: then nothing can be said about Meta, and every Meta
  service is UNKNOWN rather than DOWN.
- A service is DOWN when all its measured critical checks are failing, DEGRADED when any
  check is failing or slow, UP otherwise, UNKNOWN when nothing measured it.
- The failing layer is the lowest layer among the failing checks
  (bgp < dns < tcp < tls < http < content).
"""

from __future__ import annotations

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


def vantage_health(control: Iterable[tuple[CheckSpec, CheckState]], confirm: int) -> VantageHealth:
    checks = list(control)
    if not checks:
        return VantageHealth(True, "no control checks configured: the vantage is assumed healthy")
    if all(state.last is None for _, state in checks):
        return VantageHealth(True, "control checks have not run yet")
    down = [spec for spec, state in checks if _blocked_or_failing(state, confirm)]
    if len(down) == len(checks):
        blocked = all(state.last is not None and not state.last.measured for _, state in checks)
        why = "blocked by the egress policy" if blocked else "failing"
        return VantageHealth(
            False, f"every control check is {why}: the problem is this vantage's network, not Meta"
        )
    if down:
        return VantageHealth(
            True, f"{len(checks) - len(down)} of {len(checks)} control checks pass"
        )
    return VantageHealth(True, "control checks pass")


def _lowest_layer(results: Iterable[ProbeResult]) -> Layer:
    return min((r.layer for r in results), key=lambda layer: layer.rank, default=Layer.NONE)


def service_verdict(
    service: ServiceSpec,
    states: Mapping[tuple[str, str], CheckState],
    vantage: VantageHealth,
    confirm: int,
) -> Verdict:
    if not vantage.up:
        return Verdict(Status.UNKNOWN, Layer.NONE, "not judged: " + vantage.detail)
    pairs = [(spec, states.get(spec.key, CheckState())) for spec in service.checks]
    measured = [(spec, s) for spec, s in pairs if s.last is not None and s.last.measured]
    if not measured:
        ran = any(s.last is not None for _, s in pairs)
        return Verdict(
            Status.UNKNOWN,
            Layer.NONE,
            "every check was blocked or could not run" if ran else "no probe has finished yet",
        )
    failing = [(spec, s) for spec, s in measured if is_failing(s, confirm)]
    critical = [(spec, s) for spec, s in measured if spec.critical] or measured
    layer = _lowest_layer(s.last for _, s in failing if s.last is not None)
    if failing and all(is_failing(s, confirm) for _, s in critical):
        names = ", ".join(spec.name for spec, _ in failing)
        return Verdict(Status.DOWN, layer, f"failing at {layer.value}: {names}")
    if failing:
        names = ", ".join(f"{spec.name} ({s.last.reason.value})" for spec, s in failing if s.last)
        return Verdict(
            Status.DEGRADED, layer, f"{len(failing)} of {len(measured)} checks failing: {names}"
        )
    slow = [(spec, s) for spec, s in measured if is_slow(s, confirm)]
    if slow:
        names = ", ".join(
            f"{spec.name} {s.last.duration:.2f}s > {spec.latency_threshold:g}s"
            for spec, s in slow
            if s.last
        )
        return Verdict(Status.DEGRADED, Layer.NONE, f"slow: {names}")
    return Verdict(Status.UP, Layer.NONE, f"{len(measured)} checks pass")


def next_state(previous: ServiceState | None, verdict: Verdict, now: float) -> ServiceState:
    """Carry `since` over while the status holds; a new status starts a new period."""
    if previous is not None and previous.status is verdict.status:
        return ServiceState(verdict.status, verdict.layer, previous.since, verdict.detail)
    return ServiceState(verdict.status, verdict.layer, now, verdict.detail)
