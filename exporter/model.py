"""The vocabulary every other module shares: layers, phases, reasons, statuses, results.

One place knows each fact: the layer order, the failure reasons and the layer each
reason belongs to. Metrics, verdicts and the API all read them from here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class Layer(enum.Enum):
    """Where a failure sits, ordered bottom-up: the lowest failing layer is the cause."""

    NONE = "none"
    BGP = "bgp"
    DNS = "dns"
    TCP = "tcp"
    TLS = "tls"
    # HTTP/3's transport: a QUIC handshake failing while TCP and TLS work (Meta's QUIC edge,
    # or UDP 443 blocked on the way). Above TLS: when TCP fails too, TCP is the cause.
    QUIC = "quic"
    HTTP = "http"
    CONTENT = "content"

    @property
    def rank(self) -> int:
        return _LAYER_RANK[self]


# NONE ranks last so that min() over failing layers never picks it over a real one.
_LAYER_RANK = {
    Layer.BGP: 0,
    Layer.DNS: 1,
    Layer.TCP: 2,
    Layer.TLS: 3,
    Layer.QUIC: 4,
    Layer.HTTP: 5,
    Layer.CONTENT: 6,
    Layer.NONE: 7,
}


class Phase(enum.Enum):
    """Timed phases of a probe, named as blackbox_exporter's http prober names them."""

    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    PROCESSING = "processing"
    TRANSFER = "transfer"


class Status(enum.Enum):
    """A service's verdict."""

    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"


class Reason(enum.Enum):
    """Why a probe failed: a small fixed enum, safe as a label value."""

    OK = "ok"
    BLOCKED_BY_POLICY = "blocked_by_policy"
    DNS_NXDOMAIN = "dns_nxdomain"
    DNS_SERVFAIL = "dns_servfail"
    DNS_REFUSED = "dns_refused"
    DNS_TIMEOUT = "dns_timeout"
    DNS_NO_ANSWER = "dns_no_answer"
    DNS_ANSWER_MISMATCH = "dns_answer_mismatch"
    DNS_NOT_AUTHORITATIVE = "dns_not_authoritative"
    DNS_ERROR = "dns_error"
    TCP_REFUSED = "tcp_refused"
    TCP_UNREACHABLE = "tcp_unreachable"
    TCP_TIMEOUT = "tcp_timeout"
    TCP_RESET = "tcp_reset"
    TLS_HANDSHAKE = "tls_handshake"
    TLS_TIMEOUT = "tls_timeout"
    TLS_CERT_INVALID = "tls_cert_invalid"
    TLS_CERT_EXPIRED = "tls_cert_expired"
    TLS_HOSTNAME_MISMATCH = "tls_hostname_mismatch"
    TLS_VERSION = "tls_version"
    # HTTP/3 checks: no QUIC answer in time; ICMP says nothing listens on UDP there; no
    # route; the QUIC handshake failed otherwise (certificate failures keep their tls_ reason).
    QUIC_TIMEOUT = "quic_timeout"
    QUIC_REFUSED = "quic_refused"
    QUIC_UNREACHABLE = "quic_unreachable"
    QUIC_HANDSHAKE = "quic_handshake"
    HTTP_STATUS = "http_status"
    HTTP_TIMEOUT = "http_timeout"
    HTTP_REDIRECT_LOOP = "http_redirect_loop"
    HTTP_PROTOCOL = "http_protocol"
    CONTENT_MISMATCH = "content_mismatch"
    BODY_TOO_LARGE = "body_too_large"
    INTERNAL_ERROR = "internal_error"

    @property
    def layer(self) -> Layer:
        """The layer this reason blames (blocked_by_policy is decided per probe)."""
        return _REASON_LAYER[self]


_REASON_LAYER: dict[Reason, Layer] = {
    Reason.OK: Layer.NONE,
    # Blocked probes never left the machine: they measure nothing about Meta.
    Reason.BLOCKED_BY_POLICY: Layer.NONE,
    Reason.INTERNAL_ERROR: Layer.NONE,
    Reason.HTTP_STATUS: Layer.HTTP,
    Reason.HTTP_TIMEOUT: Layer.HTTP,
    Reason.HTTP_REDIRECT_LOOP: Layer.HTTP,
    Reason.HTTP_PROTOCOL: Layer.HTTP,
    Reason.CONTENT_MISMATCH: Layer.CONTENT,
    Reason.BODY_TOO_LARGE: Layer.CONTENT,
}
for _reason in Reason:
    _prefix = _reason.value.split("_", 1)[0]
    if _reason not in _REASON_LAYER:
        _REASON_LAYER[_reason] = Layer(_prefix)


# Reasons that say nothing about Meta: the probe did not measure the target.
UNMEASURED_REASONS = frozenset({Reason.BLOCKED_BY_POLICY, Reason.INTERNAL_ERROR})


def _frozen_phases(phases: Mapping[Phase, float]) -> Mapping[Phase, float]:
    return MappingProxyType(dict(phases))


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe saw. Immutable: the store keeps it, the verdict and metrics read it."""

    success: bool
    reason: Reason
    duration: float
    started_at: float
    phases: Mapping[Phase, float] = field(default_factory=dict)
    # A short human explanation for logs and the API. Never a label; never a secret.
    detail: str = ""
    http_status: int | None = None
    tls_expiry: float | None = None
    tls_version: str | None = None
    dns_rcode: str | None = None
    dns_answers: int | None = None
    address_family: str | None = None
    # The HTTP version an http probe spoke: "1.1", "2" or "3".
    http_version: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", _frozen_phases(self.phases))
        if self.success != (self.reason is Reason.OK):
            raise ValueError(f"success={self.success} contradicts reason={self.reason.value}")

    @property
    def layer(self) -> Layer:
        return self.reason.layer

    @property
    def measured(self) -> bool:
        """False when the probe never reached the network (policy, our own bug)."""
        return self.reason not in UNMEASURED_REASONS
