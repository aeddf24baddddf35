"""A feed's own health: up or not, why, since when — reported, never blamed on Meta."""

from __future__ import annotations

import enum
import json
import logging
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from exporter.egress import PolicyViolation
from exporter.net.dnsclient import DnsFailure

log = logging.getLogger(__name__)


class FeedError(enum.Enum):
    BLOCKED_BY_POLICY = "blocked_by_policy"
    DNS = "dns"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    DISCONNECTED = "disconnected"


class FeedFailure(Exception):
    def __init__(self, error: FeedError, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


def classify(exc: BaseException) -> FeedFailure:
    """One fixed reason per way a feed can fail (the metric label), with a detail for logs."""
    if isinstance(exc, FeedFailure):
        return exc
    if isinstance(exc, PolicyViolation):
        return FeedFailure(FeedError.BLOCKED_BY_POLICY, str(exc))
    if isinstance(exc, DnsFailure):
        return FeedFailure(FeedError.DNS, f"cannot resolve the feed's host: {exc}")
    if isinstance(exc, TimeoutError):
        return FeedFailure(FeedError.TIMEOUT, "timed out")
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
        return FeedFailure(FeedError.MALFORMED, f"not JSON: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return FeedFailure(FeedError.HTTP_STATUS, f"HTTP {exc.status}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return FeedFailure(FeedError.UNREACHABLE, f"{type(exc).__name__}: {exc}"[:200])
    return FeedFailure(FeedError.MALFORMED, f"{type(exc).__name__}: {exc}"[:200])


@dataclass(slots=True)
class FeedHealth:
    name: str
    up: bool = False
    detail: str = "not connected yet"
    last_success: float | None = None
    errors: Counter[FeedError] = field(default_factory=Counter)

    def ok(self, now: float, detail: str) -> None:
        if not self.up:
            log.info("feed %s is up: %s", self.name, detail)
        self.up, self.detail, self.last_success = True, detail, now

    def failed(self, failure: FeedFailure) -> None:
        self.errors[failure.error] += 1
        if self.up or self.detail != failure.detail:
            # Logged on change only: an unreachable feed is not news every poll.
            log.warning(
                "feed %s is unreachable (%s): %s", self.name, failure.error.value, failure.detail
            )
        self.up, self.detail = False, failure.detail
