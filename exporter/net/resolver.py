"""The exporter's own name resolution for TCP, TLS and HTTP checks.

Order: the check's resolve_to override, the config's static `hosts:` table, then DNS
through the configured resolvers (or /etc/resolv.conf's). Every address returned is
inside the egress policy; when none is, PolicyViolation says so before a packet leaves.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path

from exporter.egress import EgressPolicy
from exporter.model import Reason
from exporter.spec import Endpoint, Family

from . import dnsclient

MAX_CNAME_HOPS = 8


@functools.lru_cache(maxsize=4096)  # the same names and addresses, every probe: 3 us each
def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def family_of(address: str) -> str:
    return "ipv6" if ":" in address else "ipv4"


def parse_endpoint(text: str, default_port: int = 53) -> Endpoint:
    """An Endpoint from 1.2.3.4, 1.2.3.4:5353, ::1 or [::1]:5353. ValueError when not an IP."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    if not is_ip_literal(host):
        raise ValueError(f"{text!r} is not an IP address (optionally with :port)")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} in {text!r} is out of range")
    return Endpoint(host, port)


def system_resolvers(resolv_conf: str = "/etc/resolv.conf") -> tuple[Endpoint, ...]:
    """The nameservers of resolv.conf (read once at start-up; the file, not libc)."""
    try:
        lines = Path(resolv_conf).read_text().splitlines()
    except OSError:
        return ()
    servers = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                servers.append(parse_endpoint(parts[1]))
            except ValueError:
                continue
    return tuple(servers)


def _families(family: Family) -> tuple[str, ...]:
    return {"ip4": ("A",), "ip6": ("AAAA",), "auto": ("A", "AAAA")}[family]


class Resolver:
    def __init__(
        self,
        servers: Sequence[Endpoint],
        policy: EgressPolicy,
        hosts: Mapping[str, tuple[str, ...]] | None = None,
        attempt_timeout: float = dnsclient.DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        self.servers = tuple(servers)
        self.policy = policy
        self.hosts = {k.lower().rstrip("."): v for k, v in (hosts or {}).items()}
        self.attempt_timeout = attempt_timeout

    async def resolve(
        self,
        host: str,
        family: Family,
        *,
        deadline: float,
        override: Sequence[str] = (),
    ) -> list[str]:
        """Addresses for host, policed. Raises DnsFailure or PolicyViolation."""
        host = host.strip("[]")
        if is_ip_literal(host):
            candidates = [host]
        elif override:
            candidates = list(override)
        elif host.lower().rstrip(".") in self.hosts:
            candidates = list(self.hosts[host.lower().rstrip(".")])
        else:
            candidates = await self._lookup(host, family, deadline)
        candidates = [a for a in candidates if _family_matches(a, family)]
        if not candidates:
            raise dnsclient.DnsFailure(Reason.DNS_NO_ANSWER, f"no {family} address for {host}")
        allowed = [a for a in candidates if self.policy.permits(a)]
        if not allowed:
            self.policy.require(candidates[0], f"address of {host}")
        return allowed

    async def _lookup(self, host: str, family: Family, deadline: float) -> list[str]:
        if not self.servers:
            raise dnsclient.DnsFailure(
                Reason.DNS_ERROR, "no resolvers configured or in resolv.conf"
            )
        last_failure: dnsclient.DnsFailure | None = None
        for rdtype in _families(family):
            try:
                found = await self._lookup_type(host, rdtype, deadline)
            except dnsclient.DnsFailure as failure:
                # NXDOMAIN is final for every type; other failures may be per-type.
                if failure.reason is Reason.DNS_NXDOMAIN:
                    raise
                last_failure = failure
                continue
            if found:
                return found
        if last_failure is not None:
            raise last_failure
        raise dnsclient.DnsFailure(Reason.DNS_NO_ANSWER, f"{host} has no {family} address records")

    async def _lookup_type(self, host: str, rdtype: str, deadline: float) -> list[str]:
        name = host
        for _ in range(MAX_CNAME_HOPS):
            answer = await dnsclient.lookup_addresses(
                name,
                rdtype,
                self.servers,
                self.policy,
                deadline=deadline,
                attempt_timeout=self.attempt_timeout,
            )
            reply = answer.reply
            failure = dnsclient.failure_for(reply.rcode, answer.server, name)
            if failure is not None:
                raise failure
            if reply.addresses:
                return list(reply.addresses)
            target = reply.cname
            if target is None:
                return []
            name = target  # a resolver that returned the CNAME without chasing it
        raise dnsclient.DnsFailure(Reason.DNS_ERROR, f"CNAME chain for {host} is too long")


def _family_matches(address: str, family: Family) -> bool:
    if family == "auto" or not is_ip_literal(address):
        return True
    return family_of(address) == {"ip4": "ipv4", "ip6": "ipv6"}[family]
