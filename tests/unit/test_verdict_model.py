"""Model-based test of the verdict engine and the runtime (issue 14, acceptance 1).

Hypothesis changes a simulated world (the ground truth) step by step while the REAL Runtime
and Scheduler run on an asyncio event loop with virtual time: the loop's clock is a number,
and its selector moves that number on by the timeout it is asked to wait instead of
sleeping. The Runtime's wall clock (`since`, ProbeResult.started_at) is the same number.
Runtime.probe is replaced by a fake prober that reads the world when the probe starts, sleeps
the probe's duration (virtual) and returns what the real probers would report: ENETUNREACH is
dns_error for a DNS query and tcp_unreachable for a connect, both at once; a silent network
is a timeout (the check's timeout) of the phase the probe stops in. No socket is opened: the
test fails if one is (the loop's own self-pipe is made before the guard).

The world: three Meta services (dns checks through our resolver, http checks that resolve
through it then connect, an authoritative dns check that does not use it, a non-critical
HTTP/3 check; critical and non-critical checks), the catalogue's five control checks (a dns
check of a non-Meta name, an https check by IP, an https check by name, two HTTP/3 checks by
name) and the shipped timings (interval 15 s, jitter
0.1, recheck_interval 2 s, timeout 5 s, confirm_failures 2). Rules change:
- the uplink: up, down_link (probes fail at once) or down_silent (probes time out);
- our resolver: up or down (lookups through it time out; the authoritative check and the
  by-IP control do not use it); when the uplink goes down it keeps answering from its cache
  for a drawn 0-10 s, so, as on a real machine, the control dns check passes for a while;
- the by-IP control target (refuses connections);
- UDP 443 on our side: open or dropped (every HTTP/3 probe, Meta's and the controls', times
  out at quic; nothing else changes: the vantage is still healthy);
- Meta, per service, failing at a layer (dns: SERVFAIL through our resolver and the
  authoritative servers time out; tcp: refused or timeout; tls: handshake; quic: its QUIC
  edge silent, HTTP/3 probes time out and TCP is fine; http: 503) or not;
- the egress policy, blocking one check (blocked_by_policy at once);
- the config, reloaded: the same, one check's interval changed, one Meta check removed (and
  re-added by a later reload), or an invalid one (rejected: the old config keeps running).
Every rule then lets a drawn 0.5-40 s of virtual time pass.

Assumption: a network cannot be observed faster than the probes sample it. Every uplink,
resolver, control-target and Meta state lasts at least MIN_DWELL = timeout +
recheck_interval + 0.5 s: a flap shorter than one probe timeout plus a re-check between
probes can be seen by no prober.

Invariants, checked after every recorded probe result (on_result is wrapped), after every
step, and when a deadline below falls due:
 (i)   no Meta service is down or degraded unless the simulated Meta failed it (at a layer on
       one of its checks' paths) at some time after the vantage (uplink up and resolver up)
       last became healthy - ignoring the outages the exporter has not seen (no control
       check result yet that failed in it and would have passed on a healthy vantage: the
       control probes in it may still be running, or there was none, since a Meta check that
       was already failing re-runs no control check). Without that, a service that was
       really down until just before an outage the exporter cannot know of yet would have to
       leave "down" at once when the outage ends. One allowance: a status set before an
       outage may stand for REVERIFY_HOLD after the outage was first seen, while the
       exporter re-verifies (one control check's lone failure holds every verdict for its
       re-check, then the stale checks are probed afresh);
 (ii)  while the exporter says the vantage is down, every Meta service is unknown; and once
       the uplink has been down longer than VANTAGE_DOWN_BOUND = interval*(1+jitter) +
       2*timeout + 2*recheck_interval + 1 s (interval: the control checks' longest), the
       exporter says the vantage is down;
 (iii) a Meta failure of all of a service's critical checks, while the vantage is healthy, is
       reported down within interval*(1+jitter) + recheck_interval + 2*timeout + DOWN_SLACK
       (interval: the longest of its critical checks and the control checks) after the
       latest of: the failure began, the vantage became healthy, the config was reloaded, a
       check was blocked or unblocked; not judged while one of the service's checks or a
       control check is blocked;
 (iv)  no service is up unless one of its critical checks (all its checks if none is) last
       measured a success (blocked probes measure nothing) - or, the documented hold ("one
       lost packet is never an outage"), that check's failures since its last success began
       less than UP_HOLD = 2 * (recheck_interval + 2*timeout) ago (or the config was
       reloaded less than that ago, as in (iii)): the failure's own confirmation plus one
       confirmation of the control checks.

Run: .venv/bin/pytest tests/unit/test_verdict_model.py (2000 examples, about two minutes on
two cores). How often each rule and invariant fired, and each invariant's violations, without
stopping at the first one: .venv/bin/python -m tests.unit.test_verdict_model [EXAMPLES]
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import random
import socket
import sys
import time
import traceback
import types
from typing import Any
from unittest import mock

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

import exporter.engine.scheduler
from exporter.config.loader import parse
from exporter.engine.runtime import Runtime
from exporter.model import ProbeResult, Reason, Status
from exporter.spec import CheckSpec, Config, ServiceSpec
from tests.unit.virtual_time import VirtualClock, VirtualTimeLoop

# The shipped timings (exporter/config/catalog.yaml).
INTERVAL = 15.0
JITTER = 0.1
RECHECK = 2.0
TIMEOUT = 5.0
CONFIRM = 2

MIN_DWELL = TIMEOUT + RECHECK + 0.5
CACHE_MAX = 10.0
# (iii): a Meta check's first failure re-runs the control checks no sooner than
# recheck_interval/2 after their last start, and a control target that starts failing holds
# the verdicts for one re-check.
DOWN_SLACK = RECHECK / 2 + RECHECK
UP_HOLD = 2 * (RECHECK + 2 * TIMEOUT)
# (i): how long a status set before an outage that one control check alone saw (a blip to
# the exporter) may be held while it re-verifies: the control check's re-check, then the
# stale Meta checks probed afresh.
REVERIFY_HOLD = RECHECK + 2 * TIMEOUT + DOWN_SLACK
FAST = 0.01  # an immediate failure: refused, unreachable, SERVFAIL, 503
OK_DURATION = 0.05  # every success: far below latency_threshold, so nothing is ever slow
T0 = 1000.0  # small: float steps of the loop's clock resolution (1 ns) stay exact
MAX_DT = 40.0

CONFIG: dict[str, Any] = {
    "builtin_catalog": False,
    "global": {
        "interval": "15s",
        "timeout": "5s",
        "recheck_interval": "2s",
        "confirm_failures": CONFIRM,
        "jitter": JITTER,
    },
    # TEST-NET-1: never contacted, every probe is simulated.
    "dns": {"resolvers": ["192.0.2.53"]},
    "feeds": {"official_status": {"enabled": False}, "bgp": {"enabled": False}},
    "services": {
        "facebook": {
            "checks": {
                "dns": {"kind": "dns", "name": "facebook.com", "critical": False},
                "auth_dns": {
                    "kind": "dns",
                    "mode": "authoritative",
                    "name": "facebook.com",
                    "nameservers": ["129.134.30.12"],
                    "critical": False,
                },
                "web": {
                    "kind": "http",
                    "url": "https://www.facebook.com/",
                    "valid_status_codes": ["<500"],
                },
                "graph": {
                    "kind": "http",
                    "url": "https://graph.facebook.com/me",
                    "valid_status_codes": [400],
                },
            }
        },
        "instagram": {
            "checks": {
                "dns": {"kind": "dns", "name": "instagram.com", "critical": False},
                "web": {
                    "kind": "http",
                    "url": "https://www.instagram.com/",
                    "valid_status_codes": ["<500"],
                },
                "web_h3": {
                    "kind": "http",
                    "url": "https://www.instagram.com/",
                    "http_version": "3",
                    "valid_status_codes": ["<500"],
                    "critical": False,
                },
            }
        },
        "whatsapp": {
            "checks": {
                "web": {
                    "kind": "http",
                    "url": "https://web.whatsapp.com/",
                    "valid_status_codes": ["<500"],
                },
                "chat": {
                    "kind": "tcp",
                    "host": "g.whatsapp.net",
                    "port": 5222,
                    "critical": False,
                },
            }
        },
    },
    "control": {
        "checks": {
            "resolver": {"kind": "dns", "name": "example.com"},
            "cloudflare": {
                "kind": "http",
                "url": "https://1.1.1.1/",
                "valid_status_codes": ["<500"],
            },
            "google": {
                "kind": "http",
                "url": "https://www.google.com/generate_204",
                "valid_status_codes": [204],
            },
            "google_h3": {
                "kind": "http",
                "url": "https://www.google.com/generate_204",
                "http_version": "3",
                "valid_status_codes": [204],
            },
            "cloudflare_h3": {
                "kind": "http",
                "url": "https://www.cloudflare.com/cdn-cgi/trace",
                "http_version": "3",
                "valid_status_codes": ["<500"],
            },
        }
    },
}
SERVICES = tuple(CONFIG["services"])
META_CHECKS = tuple((s, c) for s in SERVICES for c in CONFIG["services"][s]["checks"])
CONTROL_CHECKS = tuple(("control", c) for c in CONFIG["control"]["checks"])
REFUSING_CONTROL = ("control", "cloudflare")  # the control target that can fail
LAYERS = ("dns", "tcp", "tls", "quic", "http")
UPLINK = ("up", "down_link", "down_silent")
RELOADS = ("same", "interval", "remove", "restore", "invalid")
INTERVALS = (10, 20)
REMOVABLE = (
    ("facebook", "dns"),
    ("facebook", "web"),
    ("instagram", "web"),  # instagram keeps one non-critical check: it decides alone
    ("whatsapp", "chat"),
)
INVALID_YAML = "builtin_catalog: false\nglobal:\n  interval: -15s\n"

Key = tuple[str, str]
# (the check whose interval is changed and its interval, the Meta check removed)
ConfigKey = tuple[tuple[Key, int] | None, Key | None]
_CONFIGS: dict[ConfigKey, Config] = {}


def config_for(key: ConfigKey) -> Config:
    if key not in _CONFIGS:
        data = yaml.safe_load(yaml.safe_dump(CONFIG))
        interval, removed = key
        if interval is not None:
            (service, check), seconds = interval
            section = data["control"] if service == "control" else data["services"][service]
            section["checks"][check]["interval"] = f"{seconds}s"
        if removed is not None:
            del data["services"][removed[0]]["checks"][removed[1]]
        _CONFIGS[key] = parse(yaml.safe_dump(data), "model.yml")
    return _CONFIGS[key]


def critical_checks(service: ServiceSpec) -> tuple[CheckSpec, ...]:
    """The checks that decide down: the critical ones, all of them if none is."""
    return tuple(c for c in service.checks if c.critical) or service.checks


def control_interval(config: Config) -> float:
    return max(c.interval for c in config.control.checks) if config.control else INTERVAL


class _NoSocket(socket.socket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model test must not open a socket")


def _no_socket(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the model test must not open a socket")


# -- the simulated world ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MetaFailure:
    layer: str  # dns, tcp, tls, http
    tcp_timeout: bool = False  # tcp: connections time out rather than being refused

    def __str__(self) -> str:
        return f"{self.layer}{' (timeout)' if self.tcp_timeout else ''}"


def _host(check: CheckSpec) -> str | None:
    """The name a tcp/http check resolves through our resolver (None: an IP literal)."""
    if check.kind == "tcp":
        host = check.params.host
    elif check.kind == "http":
        host = check.params.url.split("://", 1)[1].split("/", 1)[0]
    else:
        return None
    return None if host.replace(".", "").isdigit() else host


def meta_fails(check: CheckSpec, failure: MetaFailure | None) -> bool:
    """Whether this Meta failure fails the check (seen from a healthy vantage)."""
    if failure is None:
        return False
    if check.kind == "dns":
        return failure.layer == "dns"
    if check.kind == "tcp":
        return failure.layer in ("dns", "tcp")
    if check.over_quic:
        return failure.layer != "tcp"
    return failure.layer != "quic"  # http over TCP: every other layer is on its path


@dataclasses.dataclass
class World:
    clock: VirtualClock
    uplink: str = "up"
    uplink_down_since: float | None = None
    cache_until: float = -math.inf
    resolver_up: bool = True
    control_refused: bool = False
    udp_blocked: bool = False  # UDP 443 dropped on our side: QUIC-blind, still healthy
    meta: dict[str, MetaFailure] = dataclasses.field(default_factory=dict)
    blocked: Key | None = None
    # Start of the current healthy period, or of the last one (None: never healthy).
    healthy_since: float | None = None
    # Every outage (the vantage unhealthy): [start, end (None: going on), seen], where seen
    # is when the first control check's result that failed in it (and would have passed on
    # a healthy vantage) was recorded, or False.
    outages: list[list[Any]] = dataclasses.field(default_factory=list)
    # When each service's last Meta failure ended (inf: it goes on).
    meta_failure_end: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.uplink == "up" and self.resolver_up

    def note_health(self, was_healthy: bool) -> None:
        now = self.clock.now
        if self.healthy and not was_healthy:
            self.healthy_since = now
            if self.outages:
                self.outages[-1][1] = now
        elif was_healthy and not self.healthy:
            self.outages.append([now, None, False])

    def note_control_failure(self, check: CheckSpec, at: float) -> None:
        """A control check failed in a probe started at `at`: the outage then, if any, was
        seen, unless the check would have failed on a healthy vantage too."""
        for outage in reversed(self.outages):
            start, end, _ = outage
            if start <= at and (end is None or at < end):
                healthy = dataclasses.replace(self, uplink="up", resolver_up=True)
                if not outage[2] and healthy.outcome(check, at)[0] is Reason.OK:
                    outage[2] = self.clock.now
                return

    def healthy_since_seen(self) -> float | None:
        """(i): healthy_since, as if the outages no control check saw had not happened (the
        exporter cannot know of them); None: never healthy."""
        seen = [outage for outage in self.outages if outage[2]]
        if not seen:
            return T0
        if seen[-1][1] is not None:
            return seen[-1][1]
        if len(seen) > 1:
            return seen[-2][1]
        return None if seen[-1][0] == T0 else T0

    def outcome(self, check: CheckSpec, at: float) -> tuple[Reason, float]:
        """What the real prober would report for a probe started at `at`."""
        if check.key == self.blocked:
            return Reason.BLOCKED_BY_POLICY, 0.0
        failure = None if check.service == "control" else self.meta.get(check.service)
        authoritative = check.kind == "dns" and check.params.mode == "authoritative"
        if (check.kind == "dns" and not authoritative) or _host(check):
            if not self.resolver_up:
                return Reason.DNS_TIMEOUT, check.timeout
            if self.uplink != "up" and at >= self.cache_until:
                if self.uplink == "down_link":
                    return Reason.DNS_ERROR, FAST
                return Reason.DNS_TIMEOUT, check.timeout
            if failure is not None and failure.layer == "dns":
                return Reason.DNS_SERVFAIL, FAST
            if check.kind == "dns":
                return Reason.OK, OK_DURATION
        if authoritative:
            if self.uplink == "down_link":
                return Reason.DNS_ERROR, FAST
            if self.uplink == "down_silent" or (failure is not None and failure.layer == "dns"):
                return Reason.DNS_TIMEOUT, check.timeout
            return Reason.OK, OK_DURATION
        if check.over_quic:
            if self.uplink == "down_link":
                return Reason.QUIC_UNREACHABLE, FAST
            silent = self.uplink == "down_silent" or self.udp_blocked
            if silent or (failure is not None and failure.layer == "quic"):
                return Reason.QUIC_TIMEOUT, check.timeout
            if failure is not None and failure.layer == "tls":
                return Reason.TLS_HANDSHAKE, FAST
            if failure is not None and failure.layer == "http":
                return Reason.HTTP_STATUS, FAST
            return Reason.OK, OK_DURATION
        if self.uplink == "down_link":
            return Reason.TCP_UNREACHABLE, FAST
        if self.uplink == "down_silent":
            return Reason.TCP_TIMEOUT, check.timeout
        if check.key == REFUSING_CONTROL and self.control_refused:
            return Reason.TCP_REFUSED, FAST
        if failure is not None and failure.layer == "tcp":
            if failure.tcp_timeout:
                return Reason.TCP_TIMEOUT, check.timeout
            return Reason.TCP_REFUSED, FAST
        if check.kind == "tcp":
            return Reason.OK, OK_DURATION
        if failure is not None and failure.layer == "tls":
            return Reason.TLS_HANDSHAKE, FAST
        if failure is not None and failure.layer == "http":
            return Reason.HTTP_STATUS, FAST
        return Reason.OK, OK_DURATION


@dataclasses.dataclass
class Measured:
    """One check's measured results, as (iv) needs them (the store keeps only the last
    result, which may be a blocked probe)."""

    last_ok: bool | None = None
    failing_since: float | None = None  # started_at of the first failure since the last success
    after_success: bool = False  # those failures follow a success


class ModelRuntime(Runtime):
    """The real Runtime with a simulated prober; every recorded result is checked."""

    def __init__(self, config: Config, *, clock: VirtualClock, machine: VerdictModel) -> None:
        super().__init__(config, clock=clock)
        self.machine = machine

    async def probe(self, check: CheckSpec) -> ProbeResult:
        started = self.clock()
        reason, duration = self.machine.world.outcome(check, started)
        await asyncio.sleep(duration)
        return ProbeResult(
            success=reason is Reason.OK,
            reason=reason,
            duration=duration,
            started_at=started,
            detail="simulated",
        )

    def on_result(self, check: CheckSpec, result: ProbeResult) -> int:
        try:
            streak = super().on_result(check, result)
        except Exception:  # the scheduler would log it and carry on: fail instead
            self.machine.violation("harness", f"on_result raised:\n{traceback.format_exc()}")
            raise
        self.machine.after_result(check, result)
        return streak


# How often each rule and invariant fired (python -m tests.unit.test_verdict_model prints it).
STATS: collections.Counter[str] = collections.Counter()


class VerdictModel(RuleBasedStateMachine):
    # Invariants whose violation fails the test (the survey enforces none and counts them).
    enforced: frozenset[str] = frozenset({"i", "ii", "iii", "iv"})

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock(T0)
        self.loop = VirtualTimeLoop(self.clock)
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _, context: self.loop_errors.append(context))
        self.world = World(self.clock)
        self.runtime: ModelRuntime | None = None
        self.config_key: ConfigKey = (None, None)
        self.measured: dict[Key, Measured] = {}
        self.last_reload = T0
        self.last_block_change = T0
        # (ii): the longest control interval since the uplink went down.
        self.control_interval = INTERVAL
        # (iii): since when all of a service's critical checks fail in the world.
        self.meta_down_since: dict[str, float] = {}
        self.judged: set[tuple[str, float]] = set()  # (iii) windows that reached the deadline
        self.reported: set[tuple[str, float]] = set()  # (iii) windows reported down
        self.violations: list[str] = []
        self.trace: collections.deque[str] = collections.deque(maxlen=60)
        self._step_done: asyncio.Future[None] | None = None
        self._patches: list[Any] = []
        self._log = logging.getLogger("exporter")
        self._log_level = self._log.level
        self._log.setLevel(logging.CRITICAL)  # verdicts are asserted here, not logged

    # -- set-up and teardown -----------------------------------------------------------

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        uplink=st.sampled_from(("up", *UPLINK)),
        cache=st.floats(0, CACHE_MAX),
        resolver_down=st.booleans(),
    )
    def start(self, seed: int, uplink: str, cache: float, resolver_down: bool) -> None:
        """The exporter starts; the world may already be broken."""
        STATS["examples"] += 1
        rng = random.Random(seed)
        patches = [
            mock.patch.object(socket, "socket", _NoSocket),
            mock.patch.object(socket, "socketpair", _no_socket),
            mock.patch.object(socket, "create_connection", _no_socket),
            mock.patch.object(socket, "getaddrinfo", _no_socket),
            # The scheduler's jitter and start-up spread, seeded: examples replay exactly.
            mock.patch.object(
                exporter.engine.scheduler,
                "random",
                types.SimpleNamespace(Random=lambda: random.Random(rng.random())),
            ),
        ]
        for patch in patches:
            patch.start()
            self._patches.append(patch)
        world = self.world
        world.uplink, world.resolver_up = uplink, not resolver_down
        if uplink != "up":
            world.uplink_down_since, world.cache_until = T0, T0 + cache
        world.note_health(was_healthy=not world.healthy)  # the start is a change
        self._note("start", f"uplink {uplink}, resolver {'down' if resolver_down else 'up'}")

        async def started() -> ModelRuntime:
            runtime = ModelRuntime(config_for(self.config_key), clock=self.clock, machine=self)
            runtime.start()
            return runtime

        self.runtime = self.loop.run_until_complete(started())
        self._refresh_meta_down()
        self._check("start")
        self._schedule_deadlines()

    def teardown(self) -> None:
        for outage in self.world.outages:
            STATS[f"outages {'seen by a' if outage[2] else 'unseen by any'} control check"] += 1
        try:
            self.loop.run_until_complete(self._stop())
            assert not self.loop_errors, f"the event loop reported errors: {self.loop_errors}"
        finally:
            for patch in reversed(self._patches):
                patch.stop()
            self.loop.close()
            self._log.setLevel(self._log_level)

    async def _stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        leftovers = asyncio.all_tasks() - {asyncio.current_task()}
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await self.loop.shutdown_asyncgens()

    # -- rules: each changes the world (or not), then lets time pass --------------------

    @rule(dt=st.floats(0.5, MAX_DT))
    def wait(self, dt: float) -> None:
        STATS["rule wait"] += 1
        self._advance(dt)

    @rule(
        state=st.sampled_from(("up", *UPLINK)),
        cache=st.floats(0, CACHE_MAX),
        dt=st.floats(MIN_DWELL, MAX_DT),
    )
    def uplink(self, state: str, cache: float, dt: float) -> None:
        STATS["rule uplink"] += 1
        world = self.world
        if state != world.uplink:
            was = world.healthy
            if world.uplink == "up":
                world.uplink_down_since = self.clock.now
                world.cache_until = self.clock.now + cache
                self.control_interval = control_interval(self._config())
            elif state == "up":
                world.uplink_down_since = None
            world.uplink = state
            world.note_health(was)
            self._changed(f"uplink {state}")
        self._advance(dt)

    @rule(down=st.booleans(), dt=st.floats(MIN_DWELL, MAX_DT))
    def resolver(self, down: bool, dt: float) -> None:
        STATS["rule resolver"] += 1
        world = self.world
        if down == world.resolver_up:
            was = world.healthy
            world.resolver_up = not down
            world.note_health(was)
            self._changed(f"resolver {'down' if down else 'up'}")
        self._advance(dt)

    @rule(refused=st.booleans(), dt=st.floats(MIN_DWELL, MAX_DT))
    def control_target(self, refused: bool, dt: float) -> None:
        STATS["rule control_target"] += 1
        if refused != self.world.control_refused:
            self.world.control_refused = refused
            self._changed(f"control target {'refuses' if refused else 'answers'}")
        self._advance(dt)

    @rule(blocked=st.booleans(), dt=st.floats(MIN_DWELL, MAX_DT))
    def udp_443(self, blocked: bool, dt: float) -> None:
        """Our network starts (or stops) dropping UDP 443: QUIC-blind, nothing else."""
        STATS["rule udp_443"] += 1
        if blocked != self.world.udp_blocked:
            self.world.udp_blocked = blocked
            self._changed(f"UDP 443 {'dropped' if blocked else 'open'} on our side")
        self._advance(dt)

    @rule(
        service=st.sampled_from(SERVICES),
        layer=st.sampled_from(LAYERS),
        tcp_timeout=st.booleans(),
        dt=st.floats(MIN_DWELL, MAX_DT),
    )
    def meta_fail(self, service: str, layer: str, tcp_timeout: bool, dt: float) -> None:
        STATS["rule meta_fail"] += 1
        failure = MetaFailure(layer, tcp_timeout and layer == "tcp")
        if self.world.meta.get(service) != failure:
            self.world.meta[service] = failure
            self.world.meta_failure_end[service] = math.inf
            self._changed(f"Meta fails {service} at {failure}", f"Meta fails at {failure}")
        self._advance(dt)

    @precondition(lambda self: self.world.meta)
    @rule(data=st.data(), dt=st.floats(MIN_DWELL, MAX_DT))
    def meta_recover(self, data: st.DataObject, dt: float) -> None:
        STATS["rule meta_recover"] += 1
        service = data.draw(st.sampled_from(sorted(self.world.meta)), label="service")
        del self.world.meta[service]
        self.world.meta_failure_end[service] = self.clock.now
        self._changed(f"Meta recovers {service}", "Meta recovers")
        self._advance(dt)

    @rule(
        check=st.none() | st.sampled_from(META_CHECKS + CONTROL_CHECKS), dt=st.floats(0.5, MAX_DT)
    )
    def block(self, check: Key | None, dt: float) -> None:
        """The egress policy blocks one check's probes (None: none)."""
        STATS["rule block"] += 1
        if check != self.world.blocked:
            self.world.blocked = check
            self.last_block_change = self.clock.now
            what = "nothing" if check is None else "/".join(check)
            kind = (
                "nothing"
                if check is None
                else f"a {'control' if check in CONTROL_CHECKS else 'Meta'} check"
            )
            self._changed(f"egress policy blocks {what}", f"egress policy blocks {kind}")
        self._advance(dt)

    @rule(
        change=st.sampled_from(RELOADS),
        check=st.sampled_from(META_CHECKS + CONTROL_CHECKS),
        seconds=st.sampled_from(INTERVALS),
        removed=st.sampled_from(REMOVABLE),
        dt=st.floats(0.5, MAX_DT),
    )
    def reload(self, change: str, check: Key, seconds: int, removed: Key, dt: float) -> None:
        """A reload: the same config, one interval changed (or changed back), one Meta check
        removed, every check restored, or an invalid config (the old one keeps running)."""
        STATS[f"rule reload ({change})"] += 1
        runtime = self.runtime
        assert runtime is not None
        interval, gone = self.config_key
        if change == "interval":
            interval = None if interval is not None else (check, seconds)
        elif change == "remove":
            gone = removed
        elif change == "restore":
            interval, gone = None, None
        key: ConfigKey = (interval, gone)

        def loader() -> Config:
            if change == "invalid":
                return parse(INVALID_YAML, "model.yml")  # raises ConfigError
            return config_for(key)

        old = runtime.config
        ok, message = self.loop.run_until_complete(runtime.reload(loader))
        if change == "invalid":
            assert not ok and runtime.config is old and not runtime.reload_successful, message
            self._note("reload", f"rejected: {message.splitlines()[0]}")
        else:
            assert ok and runtime.config is config_for(key) and runtime.reload_successful, message
            self.config_key = key
            self.last_reload = self.clock.now
            self.control_interval = max(self.control_interval, control_interval(runtime.config))
            for stale in set(self.measured) - {c.key for c in runtime.config.checks}:
                del self.measured[stale]
            self._note("reload", f"{change}: interval {interval}, removed {gone}")
            self._refresh_meta_down()
        self._check("reload")
        self._schedule_deadlines()
        self._advance(dt)

    # -- bookkeeping -------------------------------------------------------------------

    def _config(self) -> Config:
        return self.runtime.config if self.runtime is not None else config_for(self.config_key)

    def _note(self, what: str, detail: str) -> None:
        self.trace.append(f"t=+{self.clock.now - T0:8.3f} {what}: {detail}")

    def _changed(self, change: str, kind: str | None = None) -> None:
        STATS[f"world: {kind or change}"] += 1
        self._note("world", change)
        self._refresh_meta_down()
        self._check("world change")
        self._schedule_deadlines()

    def _refresh_meta_down(self) -> None:
        for service in self._config().meta_services:
            failure = self.world.meta.get(service.name)
            if all(meta_fails(c, failure) for c in critical_checks(service)):
                self.meta_down_since.setdefault(service.name, self.clock.now)
            else:
                self.meta_down_since.pop(service.name, None)

    def _schedule_deadlines(self) -> None:
        """Check the invariants exactly when a deadline of (ii) or (iii) may fall due: every
        deadline is some change's time plus a bound."""
        now = self.clock.now
        for bound in {self._vantage_down_bound(), *self._down_bounds().values()}:
            self.loop.call_at(now + bound + 1e-6, self._check, "deadline")

    def _vantage_down_bound(self) -> float:
        return self.control_interval * (1 + JITTER) + 2 * TIMEOUT + 2 * RECHECK + 1

    def _down_bounds(self) -> dict[str, float]:
        config = self._config()
        control = config.control.checks if config.control else ()
        return {
            service.name: max(c.interval for c in (*critical_checks(service), *control))
            * (1 + JITTER)
            + RECHECK
            + 2 * TIMEOUT
            + DOWN_SLACK
            for service in config.meta_services
        }

    def _advance(self, dt: float) -> None:
        """Let dt of virtual time pass (probes, re-checks, wake-ups); stop at a violation."""
        STATS["steps"] += 1
        done = self.loop.create_future()
        self._step_done = done
        timer = self.loop.call_at(self.clock.now + dt, done.set_result, None)
        try:
            self.loop.run_until_complete(done)
        finally:
            timer.cancel()
            self._step_done = None
        self._check("step")
        if self.violations:
            raise AssertionError(self.violations[0])
        assert not self.loop_errors, f"the event loop reported errors: {self.loop_errors}"

    def after_result(self, check: CheckSpec, result: ProbeResult) -> None:
        try:
            self._note("result", f"{check.service}/{check.name} {result.reason.value}")
            if check.service == "control" and result.measured and not result.success:
                self.world.note_control_failure(check, result.started_at)
            if result.measured and self.runtime and check.key in self.runtime.store.records:
                measured = self.measured.setdefault(check.key, Measured())
                if result.success:
                    measured.last_ok, measured.failing_since = True, None
                else:
                    if measured.failing_since is None:
                        measured.failing_since = result.started_at
                        measured.after_success = measured.last_ok is True
                    measured.last_ok = False
            self._check("result")
        except Exception as exc:  # the scheduler would log it and carry on
            self.violation("harness", f"{type(exc).__name__}: {exc}")

    # -- invariants --------------------------------------------------------------------

    def violation(self, invariant: str, message: str) -> None:
        STATS[f"VIOLATED ({invariant})"] += 1
        if invariant not in self.enforced and invariant != "harness":
            return
        if not self.violations:
            self.violations.append(self._report(invariant, message))
        if self._step_done is not None and not self._step_done.done():
            self._step_done.set_result(None)

    def _reverifying(self, name: str) -> bool:
        """(i)'s one allowance: the service's status was set before the last seen outage
        began, and that outage was seen less than REVERIFY_HOLD ago. A control check's lone
        failure holds every verdict while it is re-checked (a blip must not flap a down
        service), then the stale Meta checks are probed afresh; until then the exporter
        cannot know that Meta recovered meanwhile."""
        runtime, world = self.runtime, self.world
        state = runtime.services.get(name) if runtime else None
        seen = [outage for outage in world.outages if outage[2]]
        if state is None or not seen:
            return False
        start, _, seen_at = seen[-1]
        return state.since < start and self.clock.now - seen_at <= REVERIFY_HOLD

    def _check(self, where: str) -> None:
        runtime = self.runtime
        if runtime is None:
            return
        STATS[f"invariants checked at {where}"] += 1
        now, world = self.clock.now, self.world
        status = {
            s.name: state.status if (state := runtime.services.get(s.name)) else Status.UNKNOWN
            for s in runtime.config.meta_services
        }

        # (ii) a vantage the exporter says is down judges nothing, and a dead uplink is seen.
        if not runtime.vantage.up:
            STATS["(ii) checked: vantage down, so every service unknown"] += 1
            judged = {n: s.value for n, s in status.items() if s is not Status.UNKNOWN}
            if judged:
                self.violation("ii", f"the vantage is down but services are judged: {judged}")
        if world.uplink_down_since is not None:
            down_for, bound = now - world.uplink_down_since, self._vantage_down_bound()
            if down_for > bound:
                STATS["(ii) checked: uplink down past the bound, so vantage down"] += 1
                if runtime.vantage.up:
                    self.violation(
                        "ii",
                        f"the uplink has been down {down_for:.2f}s (> {bound:g}s) "
                        "but the vantage is up",
                    )

        deadlines = self._down_deadlines()
        for service in runtime.config.meta_services:
            name, st_ = service.name, status[service.name]
            # (i) no false down or degraded.
            if st_ in (Status.DOWN, Status.DEGRADED):
                STATS[f"(i) checked: {st_.value}, so Meta failed"] += 1
                end, healthy_since = world.meta_failure_end.get(name), world.healthy_since_seen()
                false = healthy_since is None or end is None or end <= healthy_since
                if false and self._reverifying(name):
                    STATS[f"(i) {st_.value} held while re-verifying after a seen outage"] += 1
                elif false:
                    self.violation(
                        "i",
                        f"{name} is {st_.value} but Meta has not failed it since the vantage "
                        f"last became healthy ({_rel(healthy_since)})",
                    )
            # (iii) a real failure is reported in time.
            if name in deadlines:
                start, deadline = deadlines[name]
                if st_ is Status.DOWN and (name, start) not in self.reported:
                    self.reported.add((name, start))
                    STATS[f"(iii) reported down within {math.ceil((now - start) / 5) * 5:>2}s"] += 1
                if now >= deadline:
                    STATS["(iii) checked: Meta failing past the deadline, so down"] += 1
                    if (name, start) not in self.judged:
                        self.judged.add((name, start))
                        STATS["(iii) failures that reached the deadline"] += 1
                    if st_ is not Status.DOWN:
                        self.violation(
                            "iii",
                            f"{name} has failed since t=+{self.meta_down_since[name] - T0:.3f} "
                            f"(deadline t=+{deadline - T0:.3f}) but is {st_.value}",
                        )
            # (iv) up only on a measured success of a critical check.
            if st_ is Status.UP:
                STATS["(iv) checked: up, so a critical check succeeded"] += 1
                if not any(self._vouches(c.key, now) for c in critical_checks(service)):
                    self.violation("iv", f"{name} is up but no critical check succeeded")

    def _vouches(self, key: Key, now: float) -> bool:
        measured = self.measured.get(key)
        if measured is None or measured.last_ok is None:
            return False
        if measured.last_ok:
            return True
        assert measured.failing_since is not None
        # As (iii)'s deadline, the hold restarts at a reload: it cancels the probes in flight
        # and re-verifies the vantage before Meta failures count (docs/verdict.md, "config reload").
        since = max(measured.failing_since, self.last_reload)
        return measured.after_success and now - since <= UP_HOLD

    def _down_deadlines(self) -> dict[str, tuple[float, float]]:
        """(iii): per service judged now, the start of its window and its deadline."""
        world = self.world
        if not world.healthy or not self.meta_down_since:
            return {}
        assert world.healthy_since is not None
        config = self._config()
        control = {c.key for c in config.control.checks} if config.control else set()
        bounds = self._down_bounds()
        deadlines = {}
        for service in config.meta_services:
            since = self.meta_down_since.get(service.name)
            if since is None or world.blocked in control | {c.key for c in service.checks}:
                continue
            start = max(since, world.healthy_since, self.last_reload, self.last_block_change)
            deadlines[service.name] = (start, start + bounds[service.name])
        return deadlines

    def _report(self, invariant: str, message: str) -> str:
        runtime = self.runtime
        assert runtime is not None
        world = self.world
        meta = ", ".join(f"{s} at {f}" for s, f in world.meta.items()) or "none"
        lines = [
            f"invariant ({invariant}) broken at t=+{self.clock.now - T0:.3f}: {message}",
            f"world: uplink {world.uplink} (down since {_rel(world.uplink_down_since)}, "
            f"resolver cache until {_rel(world.cache_until)}), resolver "
            f"{'up' if world.resolver_up else 'down'}, control target "
            f"{'refuses' if world.control_refused else 'answers'}, UDP 443 "
            f"{'dropped' if world.udp_blocked else 'open'}, Meta failing: {meta}, "
            f"blocked: {world.blocked}, vantage healthy since {_rel(world.healthy_since)}",
            f"exporter's vantage: {runtime.vantage}",
        ]
        for name, state in runtime.services.items():
            lines.append(
                f"service {name}: {state.status.value} at {state.layer.value} "
                f"since t=+{state.since - T0:.3f}: {state.detail}"
            )
        for key, record in runtime.store.records.items():
            last = record.last
            lines.append(
                f"check {'/'.join(key)}: "
                + (
                    f"{last.reason.value} (started t=+{last.started_at - T0:.3f}), "
                    f"{record.consecutive_failures} failures in a row since "
                    f"{_rel(record.failing_since)}"
                    if last
                    else "not run yet"
                )
            )
        return "\n".join([*lines, "recent events:", *self.trace])


def _rel(t: float | None) -> str:
    return str(t) if t is None or math.isinf(t) else f"t=+{t - T0:.3f}"


VerdictModel.TestCase.settings = settings(
    max_examples=2000,
    derandomize=True,
    deadline=None,  # the machine's speed is not under test,
    suppress_health_check=[HealthCheck.too_slow],  # nor on a loaded machine, its generation's
    stateful_step_count=25,
)
TestVerdictModel = VerdictModel.TestCase


class _Survey(VerdictModel):
    enforced = frozenset()


def survey(examples: int) -> None:
    """Run the model without enforcing the invariants; print how often each rule and
    invariant fired, and each invariant's violations."""
    STATS.clear()
    started = time.monotonic()
    run_state_machine_as_test(
        _Survey, settings=settings(VerdictModel.TestCase.settings, max_examples=examples)
    )
    print(f"{examples} examples in {time.monotonic() - started:.1f}s")
    for name, count in sorted(STATS.items()):
        print(f"{count:>10}  {name}")


if __name__ == "__main__":
    survey(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)


def test_a_reload_during_our_outage_does_not_hide_it() -> None:
    """Found by the model (a fresh clone's CI run): the uplink goes silent, the one control
    probe that would have failed in it is cancelled by a config reload, and the Meta probes
    started just before the uplink came back time out. Those failures must not count: after
    a reload the control checks report again, as at start-up, before a Meta failure counts."""
    state = VerdictModel()
    try:
        state.start(seed=2864, uplink="up", cache=0.0, resolver_down=False)
        state.wait(dt=0.5)
        for _ in range(8):
            state.wait(dt=1.0)
        state.wait(dt=5.5)
        state.uplink(cache=0.0, dt=8.0, state="down_silent")
        state.reload(
            change="same",
            check=("facebook", "dns"),
            dt=0.5,
            removed=("facebook", "dns"),
            seconds=10,
        )
        state.uplink(cache=0.0, dt=8.0, state="up")
        state.wait(dt=20.0)
    finally:
        state.teardown()
