"""meta_probe_dns_rcode against the loopback fake Meta: the rcode of the latest DNS answer.

The service-detail dashboard's "DNS response codes" panel reads it.
"""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from exporter.net.dnsclient import rcode_number
from exporter.sim.dnsserver import DnsServer
from exporter.web.server import RUNTIME
from tests.integration.test_web import client, scrape, wait_for

__all__ = ["client"]  # the fixture, shared with test_web


@pytest.mark.parametrize(
    ("text", "number"),
    [("NOERROR", 0), ("SERVFAIL", 2), ("NXDOMAIN", 3), ("REFUSED", 5), ("BADCOOKIE", 23)],
)
def test_rcode_number(text: str, number: int) -> None:
    assert rcode_number(text) == number


@pytest.mark.parametrize("text", ["", "NOSUCHCODE", "5000"])
def test_unknown_rcode_is_not_exported(text: str) -> None:
    assert rcode_number(text) is None


def rcodes(families: dict[str, object]) -> dict[tuple[str, str], float]:
    family = families["meta_probe_dns_rcode"]
    return {(s.labels["service"], s.labels["check"]): s.value for s in family.samples}  # type: ignore[attr-defined]


async def test_rcode_of_dns_checks_and_of_failed_lookups(
    client: TestClient, dns_server: DnsServer
) -> None:
    healthy = rcodes(await scrape(client))
    # Every DNS check reports NOERROR; checks whose lookup succeeded report nothing.
    assert healthy[("facebook", "dns")] == 0
    assert healthy[("control", "resolver")] == 0
    assert ("instagram", "web") not in healthy

    dns_server.set_fault("facebook.com", "servfail")
    records = client.app[RUNTIME].store.records
    await wait_for(
        lambda: all(
            records[("facebook", check)].consecutive_failures >= 2 for check in ("dns", "web")
        )
    )
    failing = rcodes(await scrape(client))
    assert failing[("facebook", "dns")] == 2
    assert failing[("facebook", "web")] == 2  # the HTTP check's own lookup got SERVFAIL
    assert failing[("control", "resolver")] == 0
    assert ("instagram", "web") not in failing
