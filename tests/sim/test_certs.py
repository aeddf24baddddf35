"""The lab CA: leaf conditions and SNI selection, checked with real TLS handshakes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from exporter.sim.certs import CERT_CONDITIONS, CertSpec, LabCA

LOOPBACK = "127.0.0.1"
FB_NAMES = ["www.facebook.com", "*.facebook.com", "graph.facebook.com", LOOPBACK]

# OpenSSL X509_V_ERR_* codes the exporter maps to failure reasons.
CERT_HAS_EXPIRED = 10
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
HOSTNAME_MISMATCH = 62


@pytest.fixture(scope="module")
def lab_ca() -> LabCA:
    return LabCA()


async def _hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@contextlib.asynccontextmanager
async def serving(ctx: ssl.SSLContext) -> AsyncIterator[int]:
    server = await asyncio.start_server(_hello, LOOPBACK, 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def peer_cert(port: int, client: ssl.SSLContext, server_hostname: str) -> dict[str, Any]:
    """Handshake with SNI `server_hostname` and return the verified peer certificate."""
    _, writer = await asyncio.open_connection(
        LOOPBACK, port, ssl=client, server_hostname=server_hostname
    )
    try:
        return writer.get_extra_info("peercert")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


def dns_names(cert: dict[str, Any]) -> set[str]:
    return {value for kind, value in cert["subjectAltName"] if kind in ("DNS", "IP Address")}


async def verify_error(
    port: int, client: ssl.SSLContext, name: str
) -> ssl.SSLCertVerificationError:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        await peer_cert(port, client, name)
    return info.value


async def test_ca_pem_path_is_a_usable_trust_bundle(lab_ca: LabCA, tmp_path: Path) -> None:
    path = lab_ca.ca_pem_path(tmp_path)
    assert path.parent == tmp_path
    assert path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    client = ssl.create_default_context(cafile=str(path))
    async with serving(lab_ca.server_ssl_context(FB_NAMES)) as port:
        cert = await peer_cert(port, client, "www.facebook.com")
    assert "www.facebook.com" in dns_names(cert)


@pytest.mark.parametrize("name", ["www.facebook.com", "graph.facebook.com", "m.facebook.com"])
async def test_valid_leaf_covers_names_and_wildcards(lab_ca: LabCA, name: str) -> None:
    async with serving(lab_ca.server_ssl_context(FB_NAMES)) as port:
        cert = await peer_cert(port, lab_ca.client_ssl_context(), name)
    assert dns_names(cert) == set(FB_NAMES)


async def test_valid_leaf_for_an_ip_address(lab_ca: LabCA) -> None:
    async with serving(lab_ca.server_ssl_context([LOOPBACK])) as port:
        cert = await peer_cert(port, lab_ca.client_ssl_context(), LOOPBACK)
    assert ("IP Address", LOOPBACK) in cert["subjectAltName"]


async def test_client_context_trusts_only_the_lab_root(lab_ca: LabCA) -> None:
    # A second lab is just another unknown CA to this one's clients.
    async with serving(LabCA().server_ssl_context(FB_NAMES)) as port:
        err = await verify_error(port, lab_ca.client_ssl_context(), "www.facebook.com")
    assert err.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY


async def test_expired_leaf_fails_verification(lab_ca: LabCA) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    async with serving(lab_ca.server_ssl_context(FB_NAMES, not_after=past)) as port:
        err = await verify_error(port, lab_ca.client_ssl_context(), "www.facebook.com")
    assert err.verify_code == CERT_HAS_EXPIRED
    assert "expired" in err.verify_message


async def test_leaf_expiring_at_a_chosen_time(lab_ca: LabCA) -> None:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5)).replace(microsecond=0)
    async with serving(lab_ca.server_ssl_context(FB_NAMES, not_after=when)) as port:
        cert = await peer_cert(port, lab_ca.client_ssl_context(), "www.facebook.com")
    assert ssl.cert_time_to_seconds(cert["notAfter"]) == when.timestamp()
    assert ssl.cert_time_to_seconds(cert["notBefore"]) < dt.datetime.now(dt.UTC).timestamp()


async def test_not_before_in_the_future_is_not_yet_valid(lab_ca: LabCA) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    async with serving(lab_ca.server_ssl_context(FB_NAMES, not_before=soon)) as port:
        err = await verify_error(port, lab_ca.client_ssl_context(), "www.facebook.com")
    assert "not yet valid" in err.verify_message


async def test_wrong_ca_leaf_fails_verification(lab_ca: LabCA) -> None:
    async with serving(lab_ca.server_ssl_context(FB_NAMES, wrong_ca=True)) as port:
        err = await verify_error(port, lab_ca.client_ssl_context(), "www.facebook.com")
    assert err.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY


@pytest.mark.parametrize("name", ["facebook.com", "a.b.facebook.com", "www.instagram.com"])
async def test_names_outside_the_leaf_fail_hostname_check(lab_ca: LabCA, name: str) -> None:
    async with serving(lab_ca.server_ssl_context(FB_NAMES)) as port:
        err = await verify_error(port, lab_ca.client_ssl_context(), name)
    assert err.verify_code == HOSTNAME_MISMATCH


def test_issue_without_names_is_refused(lab_ca: LabCA) -> None:
    with pytest.raises(ValueError, match="at least one"):
        lab_ca.issue([])


def test_condition_table_builds_specs() -> None:
    assert set(CERT_CONDITIONS) == {"valid", "expired", "wrong_ca", "wrong_host"}
    assert CERT_CONDITIONS["wrong_ca"]().wrong_ca
    expired = CERT_CONDITIONS["expired"]()
    assert expired.not_after is not None and expired.not_after < dt.datetime.now(dt.UTC)
    assert expired.not_before is not None and expired.not_before < expired.not_after


# --------------------------------------------------------------------------- SNI


SNI_SPECS = {
    "www.facebook.com": CertSpec.valid(),
    "*.facebook.com": CertSpec.valid(),
    "graph.facebook.com": CertSpec.expired(),
    "www.instagram.com": CertSpec.unknown_ca(),
    "www.whatsapp.com": CertSpec.wrong_host("www.example.org"),
}


async def test_sni_picks_the_leaf_per_name(lab_ca: LabCA) -> None:
    sni = lab_ca.sni_server(SNI_SPECS)
    client = lab_ca.client_ssl_context()
    async with serving(sni.ssl_context) as port:
        www = await peer_cert(port, client, "www.facebook.com")
        wildcard = await peer_cert(port, client, "m.facebook.com")
        default = await peer_cert(port, client, LOOPBACK)  # IP: no SNI is sent
    assert dns_names(www) == {"www.facebook.com"}
    assert dns_names(wildcard) == {"*.facebook.com"}
    assert dns_names(default) == {LOOPBACK}


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("graph.facebook.com", CERT_HAS_EXPIRED),  # exact key beats "*.facebook.com"
        ("www.instagram.com", UNABLE_TO_GET_ISSUER_CERT_LOCALLY),
        ("www.whatsapp.com", HOSTNAME_MISMATCH),
        ("unknown.example.net", HOSTNAME_MISMATCH),  # unknown SNI: default leaf
    ],
)
async def test_sni_conditions_fail_as_expected(lab_ca: LabCA, name: str, code: int) -> None:
    sni = lab_ca.sni_server(SNI_SPECS)
    async with serving(sni.ssl_context) as port:
        err = await verify_error(port, lab_ca.client_ssl_context(), name)
    assert err.verify_code == code


async def test_sni_certificate_can_change_while_serving(lab_ca: LabCA) -> None:
    sni = lab_ca.sni_server({"www.facebook.com": CertSpec.valid()})
    client = lab_ca.client_ssl_context()
    async with serving(sni.ssl_context) as port:
        await peer_cert(port, client, "www.facebook.com")
        sni.set("WWW.Facebook.com.", CertSpec.expired())
        err = await verify_error(port, client, "www.facebook.com")
        assert err.verify_code == CERT_HAS_EXPIRED
        sni.remove("www.facebook.com")
        err = await verify_error(port, client, "www.facebook.com")
        assert err.verify_code == HOSTNAME_MISMATCH  # back to the default leaf
    assert sni.specs == {}


async def test_sni_expiring_leaf_reports_its_date(lab_ca: LabCA) -> None:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).replace(microsecond=0)
    sni = lab_ca.sni_server({"graph.facebook.com": CertSpec.expiring_at(when)})
    async with serving(sni.ssl_context) as port:
        cert = await peer_cert(port, lab_ca.client_ssl_context(), "graph.facebook.com")
    assert ssl.cert_time_to_seconds(cert["notAfter"]) == when.timestamp()
