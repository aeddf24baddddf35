"""PromQL pieces the dashboards share: scoped selectors and state sets turned into codes.

The exporter's state sets (meta_service_status, meta_service_failure_layer) carry one series
per state; a tile needs one number per service. `encode` turns a state set into the code of
its active state, which the panels' value mappings turn back into coloured text.
"""

from __future__ import annotations

from collections.abc import Sequence

RATE = "$__rate_interval"
VANTAGE = ('job=~"$job"', 'instance=~"$instance"')

# (label value, code, text, colour): the exporter's enums (exporter/model.py; a test holds
# them equal), in the order the tiles' value mappings list them.
STATUSES = (
    ("up", 1, "UP", "green"),
    ("degraded", 2, "DEGRADED", "orange"),
    ("down", 3, "DOWN", "red"),
    ("unknown", 4, "UNKNOWN", "#8e8e8e"),
)
LAYERS = (
    ("none", 0, "-", "green"),
    ("bgp", 1, "BGP", "dark-red"),
    ("dns", 2, "DNS", "red"),
    ("tcp", 3, "TCP", "orange"),
    ("tls", 4, "TLS", "orange"),
    ("quic", 5, "QUIC", "orange"),
    ("http", 6, "HTTP", "yellow"),
    ("content", 7, "CONTENT", "yellow"),
)
# meta_official_*status state sets (exporter/feeds/official.py OfficialStatus).
OFFICIAL = (
    ("no_issues", 1, "NO ISSUES", "green"),
    ("low_disruption", 2, "LOW", "yellow"),
    ("medium_disruption", 3, "MEDIUM", "orange"),
    ("major_disruption", 4, "MAJOR", "red"),
    ("unknown", 5, "UNKNOWN", "#8e8e8e"),
)
# meta_probe_dns_rcode values (RFC 1035 section 4.1.1).
RCODES = (
    (0, "NOERROR", "green"),
    (1, "FORMERR", "orange"),
    (2, "SERVFAIL", "red"),
    (3, "NXDOMAIN", "red"),
    (4, "NOTIMP", "orange"),
    (5, "REFUSED", "red"),
)


def sel(metric: str, *matchers: str, scoped: bool = True) -> str:
    """A selector; `scoped` ones carry the dashboard's job and instance (vantage) matchers."""
    return f"{metric}{{{','.join((*VANTAGE, *matchers) if scoped else matchers)}}}"


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def rate(metric: str, *matchers: str) -> str:
    return f"rate({sel(metric, *matchers)}[{RATE}])"


def encode(
    metric: str, label: str, states: Sequence[tuple[str, int, str, str]], by: str, *matchers: str
) -> str:
    """The code of the state whose series is 1, per `by` (a state set has exactly one)."""
    parts = [f"{sel(metric, *matchers, eq(label, value))} * {code}" for value, code, *_ in states]
    return f"max by ({by}) (\n  " + "\n  or ".join(parts) + "\n)"


def since_ms(by: str, *matchers: str) -> str:
    """When the current status began, in the milliseconds Grafana's time units expect."""
    return f"max by ({by}) ({sel('meta_service_status_since_timestamp_seconds', *matchers)}) * 1000"


def status_code(by: str, *matchers: str) -> str:
    return encode("meta_service_status", "status", STATUSES, by, *matchers)


def layer_code(by: str, *matchers: str) -> str:
    return encode("meta_service_failure_layer", "layer", LAYERS, by, *matchers)
