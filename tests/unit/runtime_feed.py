"""Feed results to the real Runtime by hand, in order, on a clock the test sets: no prober,
no scheduler, no socket. The wake-ups the runtime asks for are recorded, not run."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from exporter.config.loader import parse
from exporter.engine.runtime import Runtime
from exporter.model import ProbeResult, Reason

CONFIG: dict[str, Any] = {
    "builtin_catalog": False,
    "global": {"interval": "15s", "timeout": "5s", "recheck_interval": "2s", "confirm_failures": 2},
    # TEST-NET addresses: never contacted, results are fed by hand.
    "dns": {"resolvers": ["192.0.2.53"]},
    "feeds": {"official_status": {"enabled": False}, "bgp": {"enabled": False}},
    "services": {
        "facebook": {
            "checks": {
                "web": {
                    "kind": "http",
                    "url": "https://www.facebook.com/",
                    "valid_status_codes": ["<500"],
                }
            }
        }
    },
    "control": {
        "checks": {
            "resolver": {"kind": "dns", "name": "example.com"},
            "by_ip": {"kind": "http", "url": "https://192.0.2.1/", "valid_status_codes": ["<500"]},
            "by_name": {"kind": "http", "url": "https://example.net/", "valid_status_codes": [204]},
        }
    },
}
CONTROLS = ("resolver", "by_ip", "by_name")


class Feed:
    def __init__(
        self, services: dict[str, Any] | None = None, control: dict[str, Any] | None = None
    ) -> None:
        data = copy.deepcopy(CONFIG)
        if services is not None:
            data["services"] = services
        if control is not None:
            data["control"]["checks"].update(control)
        self.now = 1000.0
        config = parse(yaml.safe_dump(data), "runtime-feed.yml")
        self.runtime = Runtime(config, clock=lambda: self.now)
        self.checks = {c.key: c for c in self.runtime.config.checks}
        self.woken: list[tuple[list[tuple[str, str]], float]] = []
        self.runtime._wake = lambda keys, min_gap: self.woken.append((list(keys), min_gap))  # type: ignore[method-assign]

    def result(self, service: str, check: str, at: float, reason: Reason = Reason.OK) -> None:
        self.now = at + 0.1
        probe = ProbeResult(reason is Reason.OK, reason, 0.1, at)
        self.runtime.on_result(self.checks[(service, check)], probe)

    def controls(self, at: float, reason: Reason = Reason.OK, which=CONTROLS) -> None:
        for name in which:
            self.result("control", name, at, reason)

    def meta(self, at: float, reason: Reason = Reason.OK) -> None:
        self.result("facebook", "web", at, reason)

    @property
    def judged(self) -> tuple[int, int]:
        record = self.runtime.store.records[("facebook", "web")]
        return record.judged_total, record.judged_failures
