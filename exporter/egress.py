"""The egress policy: which destinations a probe may send packets to.

Checked before any packet leaves, for resolvers, nameservers and every resolved address,
so a test (or a cautious user) can prove the exporter talks to nothing else.
Deny wins over allow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = ("127.0.0.0/8", "::1/128")
EVERYWHERE = ("0.0.0.0/0", "::/0")
_THIS_HOST = ipaddress.ip_network("0.0.0.0/8")


class PolicyViolation(Exception):
    """A destination outside the egress policy. The probe fails with blocked_by_policy."""

    def __init__(self, address: str, what: str) -> None:
        super().__init__(f"{what} {address} is outside the egress policy")
        self.address = address
        self.what = what


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Networks from CIDR strings; a bare address is a single host. ValueError names the bad one."""
    networks: list[Network] = []
    for text in texts:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not a network (expected CIDR like 10.0.0.0/8)") from None
        networks.append(_unmapped(network))
    return tuple(networks)


def _unmapped(network: Network) -> Network:
    """::ffff:10.0.0.0/104 is 10.0.0.0/8: addresses are compared in their IPv4 form too."""
    mapped = ipaddress.ip_network("::ffff:0:0/96")
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(mapped):
        base = network.network_address.ipv4_mapped
        assert base is not None
        return ipaddress.ip_network(f"{base}/{network.prefixlen - 96}")
    return network


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow: tuple[Network, ...]
    deny: tuple[Network, ...] = ()

    @classmethod
    def from_strings(cls, allow: Iterable[str], deny: Iterable[str] = ()) -> EgressPolicy:
        return cls(parse_networks(allow), parse_networks(deny))

    def permits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False  # not an address: never connect to it
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 on the wire
        if ip.is_unspecified or ip in _THIS_HOST:
            return False  # 0.0.0.0 and :: reach this host: never a probe target
        if any(ip in net for net in self.deny if net.version == ip.version):
            return False
        return any(ip in net for net in self.allow if net.version == ip.version)

    def require(self, address: str, what: str) -> None:
        if not self.permits(address):
            raise PolicyViolation(address, what)

    def describe(self) -> str:
        allow = ",".join(map(str, self.allow)) or "nothing"
        deny = ",".join(map(str, self.deny))
        return f"allow={allow}" + (f" deny={deny}" if deny else "")
