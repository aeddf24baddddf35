"""What every prober shares: the environment, the phase clock, and turning outcomes into results.

A prober is `async def body(check, env, run) -> str`: it does its work inside phases of
`run.clock`, raises ProbeFailure (or DnsFailure / PolicyViolation / TimeoutError) when the
target fails, and returns a short detail on success. `execute()` applies the deadline and
maps every way out to one immutable ProbeResult, so no prober repeats that logic.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from exporter.egress import EgressPolicy, PolicyViolation
from exporter.model import Phase, ProbeResult, Reason
from exporter.net.dnsclient import DnsFailure
from exporter.net.resolver import Resolver
from exporter.spec import CheckSpec

log = logging.getLogger(__name__)

# Which reason a deadline means, by the phase it interrupted.
TIMEOUT_REASONS = {
    Phase.RESOLVE: Reason.DNS_TIMEOUT,
    Phase.CONNECT: Reason.TCP_TIMEOUT,
    Phase.TLS: Reason.TLS_TIMEOUT,
    Phase.PROCESSING: Reason.HTTP_TIMEOUT,
    Phase.TRANSFER: Reason.HTTP_TIMEOUT,
    None: Reason.HTTP_TIMEOUT,
}
# HTTP/3: a deadline during connect is the QUIC handshake's (libcurl's connect mark for QUIC
# comes with the handshake nearly done).
QUIC_TIMEOUT_REASONS = {**TIMEOUT_REASONS, Phase.CONNECT: Reason.QUIC_TIMEOUT}


class ProbeFailure(Exception):
    """The target failed: reason from the fixed enum, a detail for humans, optional facts."""

    def __init__(self, reason: Reason, detail: str, **facts: Any) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.facts = facts


class PhaseClock:
    """Accumulates time per phase; knows the phase in progress when a deadline strikes."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self.totals: dict[Phase, float] = {}
        self.current: Phase | None = None
        self._entered = 0.0

    def enter(self, phase: Phase) -> None:
        self.leave()
        self.current = phase
        self._entered = self._now()

    def leave(self) -> None:
        if self.current is not None:
            spent = self._now() - self._entered
            self.totals[self.current] = self.totals.get(self.current, 0.0) + spent
            self.current = None

    def record(
        self, spent: Mapping[Phase, float], current: Phase | None = None, since: float = 0.0
    ) -> None:
        """Fold in phases timed by another clock (libcurl's); `current` is still in
        progress, begun at `since` on this clock's time."""
        self.leave()
        for phase, seconds in spent.items():
            self.totals[phase] = self.totals.get(phase, 0.0) + seconds
        if current is not None:
            self.current = current
            self._entered = since

    @contextmanager
    def phase(self, phase: Phase):  # type: ignore[no-untyped-def]
        self.enter(phase)
        try:
            yield
            self.leave()
        except BaseException:
            # Keep `current` so the caller can tell which phase failed, but count its time.
            failed = self.current
            self.leave()
            self.current = failed
            raise


@dataclass
class ProbeRun:
    """Mutable state of one probe while it runs; becomes a ProbeResult at the end."""

    clock: PhaseClock = field(default_factory=PhaseClock)
    facts: dict[str, Any] = field(default_factory=dict)
    # Event-loop time when the probe's deadline strikes.
    deadline: float = math.inf
    # Which reason a deadline means, by the phase in progress (the prober may change it).
    timeout_reasons: Mapping[Phase | None, Reason] = field(default_factory=lambda: TIMEOUT_REASONS)


class ProbeEnv:
    """Long-lived things probes share: the resolver, the egress policy, TLS contexts."""

    def __init__(
        self, resolver: Resolver, policy: EgressPolicy, ca_file: str | None = None
    ) -> None:
        self.resolver = resolver
        self.policy = policy
        self.ca_file = ca_file
        self._ssl_contexts: dict[str | None, ssl.SSLContext] = {}
        # (kind, service, check, exception type) whose crash was logged with its traceback:
        # a prober that crashes on every probe must not flood the log.
        self.crashes_logged: set[tuple[str, str, str, str]] = set()

    def ssl_context(self, ca_file: str | None = None) -> ssl.SSLContext:
        """A verifying client context, cached per CA bundle (loading a bundle costs ms)."""
        key = ca_file or self.ca_file
        context = self._ssl_contexts.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=key)
            # ALPN http/1.1: we speak HTTP/1.1 and must not be offered h2 we cannot read.
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_contexts[key] = context
        return context


ProbeBody = Callable[[CheckSpec, ProbeEnv, ProbeRun], Awaitable[str]]

_FACT_FIELDS = (
    "http_status",
    "tls_expiry",
    "tls_version",
    "dns_rcode",
    "dns_answers",
    "address_family",
    "http_version",
)


def _log_crash(check: CheckSpec, env: ProbeEnv, exc: Exception) -> None:
    """The traceback once per check and exception type; later repeats at debug, one line."""
    key = (check.kind, check.service, check.name, type(exc).__name__)
    if key in env.crashes_logged:
        log.debug("prober %s crashed again on check %s/%s: %s", check.kind, *key[1:])
        return
    env.crashes_logged.add(key)
    log.error(
        "prober %s crashed on check %s/%s (logged once; the check reports internal_error)",
        check.kind,
        check.service,
        check.name,
        exc_info=exc,
    )


async def execute(check: CheckSpec, env: ProbeEnv, body: ProbeBody) -> ProbeResult:
    """Run one probe under its deadline and return what it saw. Never raises (but cancel)."""
    run = ProbeRun(deadline=asyncio.get_running_loop().time() + check.timeout)
    started_at = time.time()
    start = time.perf_counter()
    reason, detail = Reason.OK, ""
    try:
        async with asyncio.timeout(check.timeout):
            detail = await body(check, env, run)
    except ProbeFailure as failure:
        reason, detail = failure.reason, failure.detail
        run.facts.update(failure.facts)
    except DnsFailure as failure:
        reason, detail = failure.reason, failure.detail
        if failure.rcode:
            run.facts.setdefault("dns_rcode", failure.rcode)
    except PolicyViolation as violation:
        reason, detail = Reason.BLOCKED_BY_POLICY, str(violation)
    except TimeoutError:
        reason = run.timeout_reasons[run.clock.current]
        phase = run.clock.current.value if run.clock.current else "request"
        detail = f"no answer within {check.timeout:.3g}s (during {phase})"
    except Exception as exc:  # a bug in a prober must not stop the others
        _log_crash(check, env, exc)
        reason, detail = Reason.INTERNAL_ERROR, f"internal error: {type(exc).__name__}"
    run.clock.leave()
    facts = {k: v for k, v in run.facts.items() if k in _FACT_FIELDS}
    return ProbeResult(
        success=reason is Reason.OK,
        reason=reason,
        duration=time.perf_counter() - start,
        started_at=started_at,
        phases=run.clock.totals,
        detail=detail,
        **facts,
    )
