"""--web.config.file end to end: the real exporter process serving TLS with basic auth.

Certificates come from the lab CA (trustme); clients are real (aiohttp, the ssl module).
Every endpoint is asked without credentials, with a wrong password, as an unknown user and
with the right credentials; TLS is asked with the CA, without it, as plain HTTP, and by a
client capped at TLS 1.2 when the server's min_version is TLS13; with client certificates
required, by clients with none, an untrusted one and a trusted one.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from yarl import URL

from exporter.sim.certs import LabCA
from tests.integration.exporter_process import CLI, ExporterProcess, exporter_process

USER, PASSWORD = "prometheus", "correct horse battery staple"
# (method, path, statuses the endpoint answers with the right credentials)
ENDPOINTS = [
    ("GET", "/", {200}),
    ("GET", "/metrics", {200}),
    ("GET", "/api/v1/status", {200}),
    ("GET", "/api/v1/history", {200}),
    ("GET", "/-/healthy", {200}),
    ("GET", "/-/ready", {200, 503}),
    ("POST", "/-/reload", {200}),
    ("GET", "/probe?check=web&service=facebook", {200}),
    ("GET", "/favicon.ico", {204}),
    ("GET", "/no-such-page", {404}),
]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def write_web_config(
    directory: Path, lab_ca: LabCA, *, min_version: str = "TLS13", tls: bool = True
) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    lines = [f"basic_auth_users:\n  {USER}: {hashed}\n"]
    if tls:
        leaf = lab_ca.issue(["127.0.0.1", "localhost"])
        (directory / "server.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(directory / "server.key"))
        lines.append(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            f"  min_version: {min_version}\n"
        )
    path = directory / "web.yml"
    path.write_text("".join(lines))
    return path


@pytest.fixture
async def secured(
    config_file: Path, lab_ca: LabCA, tmp_path: Path
) -> AsyncIterator[ExporterProcess]:
    web = write_web_config(tmp_path, lab_ca)
    async with exporter_process(
        "--config.file", str(config_file), "--web.config.file", str(web)
    ) as running:
        assert running.base.startswith("https://")
        yield running


async def test_every_endpoint_needs_the_right_credentials(
    secured: ExporterProcess, lab_ca: LabCA
) -> None:
    connector = aiohttp.TCPConnector(ssl=lab_ca.client_ssl_context())
    attempts = {
        "none": {},
        "wrong password": basic(USER, "wrong"),
        "unknown user": basic("intruder", PASSWORD),
        "right": basic(USER, PASSWORD),
    }
    async with aiohttp.ClientSession(connector=connector) as http:
        for method, path, expected in ENDPOINTS:
            for label, auth in attempts.items():
                url = URL(secured.base + path, encoded=True)
                async with http.request(method, url, headers=auth) as response:
                    body = await response.text()
                    if label == "right":
                        assert response.status in expected, (path, response.status, body)
                    else:
                        assert response.status == 401, (path, label, response.status)
                        challenge = response.headers.get("WWW-Authenticate", "")
                        assert challenge.startswith('Basic realm="meta-outage-exporter"')
                        assert "Facebook" not in body and "meta_" not in body
    assert PASSWORD not in secured.log


async def tls_version_with(context: ssl.SSLContext, base: str) -> str:
    url = URL(base)
    _, writer = await asyncio.open_connection(url.host, url.port, ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return ssl_object.version()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tls_with_a_real_client(secured: ExporterProcess, lab_ca: LabCA) -> None:
    trusted = lab_ca.client_ssl_context()
    assert await tls_version_with(trusted, secured.base) == "TLSv1.3"
    # A client capped at TLS 1.2 is refused: min_version is TLS13.
    tls12 = lab_ca.client_ssl_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError)):  # an alert, or a hang-up
        await tls_version_with(tls12, secured.base)
    # A client that does not trust the lab CA refuses the server.
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls_version_with(ssl.create_default_context(cafile=None, cadata=None), secured.base)
    # Plain HTTP to the TLS port gets no HTTP answer.
    plain = secured.base.replace("https://", "http://")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"{plain}/-/healthy", headers=basic(USER, PASSWORD)):
                pass


async def test_basic_auth_without_tls(config_file: Path, lab_ca: LabCA, tmp_path: Path) -> None:
    """basic_auth_users alone: plain HTTP, and still no endpoint without credentials."""
    web = write_web_config(tmp_path, lab_ca, tls=False)
    async with (
        exporter_process("--config.file", str(config_file), "--web.config.file", str(web)) as run,
        aiohttp.ClientSession() as http,
    ):
        assert run.base.startswith("http://")
        assert (await http.get(f"{run.base}/metrics")).status == 401
        good = await http.get(f"{run.base}/metrics", headers=basic(USER, PASSWORD))
        assert good.status == 200 and "meta_exporter_build_info" in await good.text()


async def test_invalid_web_config_exits_2_naming_file_and_line(
    config_file: Path, tmp_path: Path
) -> None:
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        "--config.file",
        str(config_file),
        "--web.config.file",
        str(web),
        "--web.listen-address",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    text = stderr.decode()
    assert "invalid web configuration" in text
    assert f"{web}:2:14: tls_server_config.cert_file: cannot read" in text, text


async def test_client_certificates_when_required(
    config_file: Path, lab_ca: LabCA, tmp_path: Path
) -> None:
    """RequireAndVerifyClientCert: no certificate, or one from a CA the server does not trust,
    gets no HTTP answer at all; the lab CA's client certificate (and the password) does."""
    web = write_web_config(tmp_path, lab_ca, min_version="TLS12")
    lab_ca.ca_pem_path(tmp_path)
    web.write_text(
        web.read_text()
        + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: lab-ca.pem\n"
    )
    trusted_client = lab_ca.issue(["prometheus.example"])
    untrusted_client = lab_ca.other_issuer.issue_cert("prometheus.example")

    def client_context(leaf: object | None) -> ssl.SSLContext:
        context = lab_ca.client_ssl_context()
        if leaf is not None:
            leaf.configure_cert(context)  # type: ignore[attr-defined]
        return context

    async def get(context: ssl.SSLContext, base: str) -> int:
        connector = aiohttp.TCPConnector(ssl=context, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(f"{base}/metrics", headers=basic(USER, PASSWORD)) as response,
        ):
            return response.status

    async with exporter_process(
        "--config.file", str(config_file), "--web.config.file", str(web)
    ) as run:
        for leaf in (None, untrusted_client):
            with pytest.raises(aiohttp.ClientError):  # the handshake fails: an alert, a reset
                await get(client_context(leaf), run.base)
        assert await get(client_context(trusted_client), run.base) == 200
