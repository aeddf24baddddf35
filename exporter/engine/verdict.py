"""Verdicts, as pure functions: check states -> vantage health -> service status and layer.

The evidence rule (docs/verdict.md, "How the verdict is reached"): **a Meta failure counts
only if it was measured while the vantage was healthy and settled, and the control checks
vouched for the vantage after it; "up" needs a success.** In detail:
- The vantage is *up* while more than half of its control checks (non-Meta targets) pass;
  a control check fails once its failure is confirmed, or when the egress policy blocks it.
  A cached answer from our resolver can keep one control passing while the uplink is gone,
  so one of three passing is not enough. While the vantage is down every Meta service is
  UNKNOWN. While a control check has an unconfirmed failure the vantage is *unsettled* and
  the Meta verdicts hold still. When the control DNS checks all fail our resolver is broken:
  DNS failures are not held against Meta.
- The HTTP/3 control checks are a dimension of their own, for the HTTP/3 checks only: they
  are not in the majority (a network that drops UDP 443 is still up); while one has an
  unconfirmed failure QUIC is *unsettled* and only the services with a failing HTTP/3 check
  hold; they vouch only while QUIC is open. When they all fail at the quic layer (or cannot
  run) this network blocks QUIC, and QUIC failures are not held against Meta.
- The runtime stamps two moments on the vantage: `settled_since`, when it last became up
  and settled (or its resolver came back), and `recovered_at`, when it last came back from
  down; a third, `quic_since`, when QUIC last settled or changed between open and blocked,
  restarts the HTTP/3 checks alone. A Meta failure probed before `settled_since`, and any
  result probed before `recovered_at`, is *stale*: it is re-probed at once, and its service
  holds until then.
- A check is *failing* when its last result is a fresh, measured failure, confirmed
  (confirm_failures in a row: the first failure plus its fast re-check), and every control
  check ran after the failure that confirmed it. Blocked or crashed probes measure nothing.
- A service is DOWN when all its measured critical checks are failing (all its checks if
  none is critical), DEGRADED when any check is failing or slow, UP when its critical checks
  pass. While any of its checks is stale, or a critical check has a failure being confirmed
  and none passes, it holds its previous verdict (UNKNOWN at first).
- A service whose DNS prefixes (dns_prefixes) are all withdrawn from BGP by most peers is
  DOWN at layer bgp at once, before resolvers' caches expire and DNS starts failing; it
  stays at bgp, the root cause, while DNS and the layers above fail after it.
- Otherwise the failing layer is the lowest layer among the failing checks
  (bgp < dns < tcp < tls < quic < http < content).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.model import Layer, ProbeResult, Status
from exporter.spec import CheckSpec, ServiceSpec


@dataclass(frozen=True, slots=True)
class CheckState:
    """What the verdict needs to know about one check."""

    last: ProbeResult | None = None
    consecutive_failures: int = 0
    consecutive_slow: int = 0
    # started_at of the first failure of the current streak.
    failing_since: float | None = None
    # started_at of the failure that confirmed the streak (the confirm_failures-th in a row).
    confirmed_at: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    layer: Layer
    detail: str
    # True: no fresh evidence either way; keep the previous verdict (this one only if none).
    hold: bool = False


def _hold(detail: str) -> Verdict:
    return Verdict(Status.UNKNOWN, Layer.NONE, detail, hold=True)


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
    # False when every HTTP/3 control check fails: this network blocks QUIC, so QUIC
    # failures say nothing about Meta.
    quic_ok: bool = True
    # When every control check last ran: a Meta failure confirmed later is not yet known
    # to be Meta's (+inf without control checks: nothing to wait for).
    verified_at: float = math.inf
    # False until every control check has run once: nothing is judged before.
    known: bool = True
    # Stamped by the runtime (see the module docstring): failures probed before
    # settled_since, and any result probed before recovered_at, are stale.
    settled_since: float = -math.inf
    recovered_at: float = -math.inf
    # When QUIC last settled, or became judgeable or unjudgeable (quic_ok changed): HTTP/3
    # checks' failures probed before are stale. Only HTTP/3 checks: the others are not.
    quic_since: float = -math.inf
    # False while an HTTP/3 control check has an unconfirmed failure: the services with a
    # failing HTTP/3 check hold still (the others are judged as usual).
    quic_settled: bool = True
    # When every HTTP/3 control check last ran, while QUIC is open: an HTTP/3 check's failure
    # is vouched for by both kinds of control checks, any other check's by the others only.
    quic_verified_at: float = math.inf

    @property
    def judging(self) -> bool:
        """Meta results measured now can count: known, up and settled."""
        return self.known and self.up and self.settled

    def settled_for(self, over_quic: bool) -> float:
        """settled_since as one check sees it: HTTP/3 checks also restart at quic_since."""
        return max(self.settled_since, self.quic_since) if over_quic else self.settled_since

    def fresh_for(self, over_quic: bool) -> float:
        """This check's results probed before this moment are stale."""
        return max(self.settled_for(over_quic), self.recovered_at)

    def verified_for(self, over_quic: bool) -> float:
        return min(self.verified_at, self.quic_verified_at) if over_quic else self.verified_at


def unjudgeable(result: ProbeResult, vantage: VantageHealth) -> bool:
    """Pure: a failure at a layer this vantage cannot see through now (DNS while our resolver
    fails, QUIC while this network blocks it). It says nothing about Meta: it is never
    failing, never counted, and builds no failure streak (a streak of QUIC failures seen
    while QUIC-blind must not confirm a DNS failure that follows it)."""
    return not result.success and (
        (result.layer is Layer.DNS and not vantage.dns_ok)
        or (result.layer is Layer.QUIC and not vantage.quic_ok)
    )


def counts(
    result: ProbeResult,
    measured_under: VantageHealth,
    vouched_by: VantageHealth,
    *,
    over_quic: bool = False,
) -> bool:
    """Pure: does this Meta result count toward the SLI (meta_probes_judged_total)?

    The verdict's evidence rule for every result, success or failure alike: measured while
    the vantage was judging and after it last settled (`measured_under`, the vantage when
    the result arrived), then vouched for by the control checks run after it, with the
    vantage still judging and not gone down since (`vouched_by`). A control check's blip
    (one failure, then a pass) voids only the results measured after that check last
    passed (the runtime drops them): the SLI must treat successes and failures alike, and
    failures are vouched for at once (they wake the control checks) while successes wait
    for the controls' next run, so voiding all that waits at a blip would void mostly
    successes and inflate the error ratio (5 % packet loss read as a burning budget).
    An HTTP/3 check's results, successes too, count only while QUIC is judgeable: counting
    its successes but not its QUIC failures would bias the ratio towards "up"."""
    if over_quic and not (
        measured_under.quic_ok and measured_under.quic_settled and vouched_by.quic_ok
    ):
        return False
    return (
        measured_under.judging
        and vouched_by.judging
        and result.measured
        and measured_under.fresh_for(over_quic)
        <= result.started_at
        <= vouched_by.verified_for(over_quic)
        and result.started_at >= vouched_by.recovered_at
        and not unjudgeable(result, measured_under)
        and not unjudgeable(result, vouched_by)
    )


class Judgement(enum.Enum):
    """What one check's last result says about Meta under the evidence rule."""

    PASSING = "passing"
    SLOW = "slow"
    FAILING = "failing"  # confirmed, fresh, vouched for by the control checks
    PENDING = "pending"  # a fresh failure not yet confirmed or not yet vouched for
    STALE = "stale"  # not run yet, or probed before the vantage recovered or settled
    SILENT = "silent"  # measured nothing about Meta (blocked, crashed, our resolver)


def is_failing(state: CheckState, confirm: int) -> bool:
    last = state.last
    return (
        last is not None
        and not last.success
        and last.measured
        and state.consecutive_failures >= confirm
    )


def _control_failed(state: CheckState, confirm: int) -> bool:
    """A control check counts against the vantage: blocked, or a confirmed failure."""
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


QUIC_BLOCKED = (
    "this network blocks QUIC (every HTTP/3 control check fails): "
    "QUIC failures are not blamed on Meta"
)
QUIC_UNCHECKED = (
    "the HTTP/3 control checks cannot run (blocked by the egress policy, or an internal "
    "error): QUIC failures are not blamed on Meta"
)


def _against_quic(state: CheckState, confirm: int) -> bool:
    """An HTTP/3 control check that says QUIC cannot be vouched for from here: a confirmed
    failure at the quic layer (a failure above it proves the handshake worked; one below
    it, at DNS, is our resolver's), or a probe that could not run at all."""
    last = state.last
    if last is None or last.success:
        return False
    if not last.measured:
        return True
    return last.layer is Layer.QUIC and state.consecutive_failures >= confirm


def vantage_health(control: Iterable[tuple[CheckSpec, CheckState]], confirm: int) -> VantageHealth:
    checks = list(control)
    if not checks:
        return VantageHealth(True, "no control checks configured: the vantage is assumed healthy")
    if any(state.last is None for _, state in checks):
        return VantageHealth(
            True, "control checks have not run yet", verified_at=-math.inf, known=False
        )
    # Every control check settles; the HTTP/3 ones only answer "is QUIC open", and vouch
    # only while it is (QUIC-blind, their 5 s timeouts would delay every other verdict).
    settled = not any(_unconfirmed_failure(s, confirm) for spec, s in checks if not spec.over_quic)
    quic = [state for spec, state in checks if spec.over_quic]
    quic_settled = not any(_unconfirmed_failure(s, confirm) for s in quic)
    quic_ok = not quic or not all(_against_quic(s, confirm) for s in quic)

    def last_run(states: Iterable[CheckState]) -> float:
        return min((s.last.started_at for s in states if s.last is not None), default=math.inf)

    verified_at = last_run(s for spec, s in checks if not spec.over_quic)
    # QUIC-blind, the HTTP/3 controls vouch for nothing: QUIC failures are silent then.
    quic_verified_at = last_run(quic) if quic_ok else math.inf
    checks = [(spec, state) for spec, state in checks if not spec.over_quic]
    resolver_checks = [state for spec, state in checks if spec.kind == "dns"]
    dns_ok = not resolver_checks or not all(_control_failed(s, confirm) for s in resolver_checks)
    down = [spec for spec, state in checks if _control_failed(state, confirm)]
    passing = len(checks) - len(down)

    def health(up: bool, detail: str) -> VantageHealth:
        return VantageHealth(
            up,
            detail,
            settled,
            dns_ok,
            quic_ok,
            verified_at,
            quic_settled=quic_settled,
            quic_verified_at=quic_verified_at,
        )

    # Only HTTP/3 control checks: nothing speaks for the uplink itself (config warns).
    if checks and passing * 2 <= len(checks):
        blocked = all(
            state.last is not None and not state.last.measured
            for spec, state in checks
            if spec in down
        )
        why = "blocked by the egress policy" if blocked else "failing"
        which = (
            "every control check is"
            if not passing
            else f"{len(down)} of {len(checks)} control checks are"
        )
        return health(
            False,
            f"{which} {why}: the problem is this vantage's network, "
            "so Meta cannot be judged from here",
        )
    notes = []
    if not dns_ok:
        notes.append("this vantage's resolver fails: DNS failures are not blamed on Meta")
    if not quic_ok:
        unchecked = all(s.last is not None and not s.last.measured for s in quic)
        notes.append(QUIC_UNCHECKED if unchecked else QUIC_BLOCKED)
    if notes:
        detail = "; ".join(notes)
    elif down:
        detail = f"{passing} of {len(checks)} control checks pass"
    else:
        detail = "control checks pass"
    return health(True, detail)


def judge(
    state: CheckState, vantage: VantageHealth, confirm: int, *, over_quic: bool = False
) -> Judgement:
    """Pure: what this check's last result says about Meta (see the module docstring)."""
    settled_since = vantage.settled_for(over_quic)
    last = state.last
    if last is None:
        return Judgement.STALE
    if not last.measured:
        return Judgement.SILENT
    if last.started_at < vantage.recovered_at:
        return Judgement.STALE
    if last.success:
        fresh = last.started_at >= settled_since
        return Judgement.SLOW if fresh and state.consecutive_slow >= confirm else Judgement.PASSING
    if unjudgeable(last, vantage):
        return Judgement.SILENT
    if last.started_at < settled_since or (
        state.failing_since is not None and state.failing_since < settled_since
    ):
        return Judgement.STALE
    if state.consecutive_failures < confirm:
        return Judgement.PENDING
    # Vouched for: every control check ran after the failure that confirmed the streak.
    confirmed_at = state.confirmed_at if state.confirmed_at is not None else last.started_at
    vouched = confirmed_at <= vantage.verified_for(over_quic)
    return Judgement.FAILING if vouched else Judgement.PENDING


def _lowest_layer(results: Iterable[ProbeResult]) -> Layer:
    return min((r.layer for r in results), key=lambda layer: layer.rank, default=Layer.NONE)


def service_verdict(
    service: ServiceSpec,
    states: Mapping[tuple[str, str], CheckState],
    vantage: VantageHealth,
    confirm: int,
    withdrawn: frozenset[str] = frozenset(),
) -> Verdict:
    """The service's verdict; `hold` set when the previous one should stand.

    `withdrawn`: prefixes the BGP feed sees withdrawn by most peers (empty: none, or no feed).
    """
    if not vantage.known:
        return _hold("waiting for the control checks")
    if not vantage.up:
        return Verdict(Status.UNKNOWN, Layer.NONE, "not judged: " + vantage.detail)
    if not vantage.settled:
        return _hold("waiting for the control checks")
    if not vantage.quic_settled and any(
        spec.over_quic and (last := states.get(spec.key, CheckState()).last) and not last.success
        for spec in service.checks
    ):
        return _hold("waiting for the HTTP/3 control checks")
    if service.dns_prefixes and withdrawn.issuperset(service.dns_prefixes):
        return _bgp_verdict(service, states, confirm)
    judged = [
        (
            spec,
            states.get(spec.key, CheckState()),
            judge(states.get(spec.key, CheckState()), vantage, confirm, over_quic=spec.over_quic),
        )
        for spec in service.checks
    ]
    measured = [(spec, s, j) for spec, s, j in judged if j is not Judgement.SILENT]
    if not measured:
        blind = not (vantage.dns_ok and vantage.quic_ok)
        if blind and any(s.last is not None for _, s, _ in judged):
            return Verdict(Status.UNKNOWN, Layer.NONE, "not judged: " + vantage.detail)
        return Verdict(Status.UNKNOWN, Layer.NONE, "every check was blocked or could not run")
    if any(j is Judgement.STALE for _, _, j in measured):
        ran = any(s.last is not None for _, s, _ in judged)
        return _hold(
            "re-probing after this vantage recovered" if ran else "no probe has finished yet"
        )
    failed = [(spec, s) for spec, s, j in measured if j is Judgement.FAILING]
    has_critical = any(spec.critical for spec in service.checks)
    critical = [j for spec, _, j in measured if spec.critical or not has_critical]
    if Judgement.PENDING in critical and not ({Judgement.PASSING, Judgement.SLOW} & set(critical)):
        # A critical failure being confirmed, and no critical check passing: it may end in
        # down or in nothing. Neither verdict before it does (and no down -> degraded ->
        # down flap while a down service's checks are probed afresh).
        return _hold("confirming a failure")
    layer = _lowest_layer(s.last for _, s in failed if s.last is not None)
    if failed and critical and all(j is Judgement.FAILING for j in critical):
        names = ", ".join(spec.name for spec, _ in failed)
        return Verdict(Status.DOWN, layer, f"failing at {layer.value}: {names}")
    if failed:
        names = ", ".join(f"{spec.name} ({s.last.reason.value})" for spec, s in failed if s.last)
        return Verdict(
            Status.DEGRADED, layer, f"{len(failed)} of {len(measured)} checks failing: {names}"
        )
    slow = [(spec, s) for spec, s, j in measured if j is Judgement.SLOW]
    if slow:
        names = ", ".join(
            f"{spec.name} {s.last.duration:.2f}s > {spec.latency_threshold:g}s"
            for spec, s in slow
            if s.last
        )
        return Verdict(Status.DEGRADED, Layer.NONE, f"slow: {names}")
    if not critical:  # up needs a success of a critical check
        return Verdict(Status.UNKNOWN, Layer.NONE, "every critical check was blocked")
    passing = sum(j is Judgement.PASSING for _, _, j in measured)
    checks = "1 check passes" if passing == 1 else f"{passing} checks pass"
    confirming = len(measured) - passing
    return Verdict(
        Status.UP, Layer.NONE, f"{checks}, {confirming} re-checking" if confirming else checks
    )


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


def next_state(previous: ServiceState | None, verdict: Verdict, now: float) -> ServiceState:
    """Carry `since` over while the status holds; a new status starts a new period."""
    if verdict.hold and previous is not None:
        return previous
    if previous is not None and previous.status is verdict.status:
        return ServiceState(verdict.status, verdict.layer, previous.since, verdict.detail)
    return ServiceState(verdict.status, verdict.layer, now, verdict.detail)
