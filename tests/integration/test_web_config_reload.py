"""--web.config.file stays live in the real exporter process, as exporter-toolkit's does:
a rotated certificate, a new TLS floor and changed users take effect without a restart;
a change that cannot load (or cannot be made in place) is refused and the running config
keeps serving. Real TLS clients (the ssl module, aiohttp) against the lab CA's certificates.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from yarl import URL

from exporter.sim.certs import LabCA
from tests.integration.exporter_process import ExporterProcess, exporter_process
from tests.integration.test_web import reference_metrics
from tests.integration.test_web_security import PASSWORD, USER, basic, write_web_config


async def served_certificate(base: str, context: ssl.SSLContext) -> dict:
    url = URL(base)
    _, writer = await asyncio.open_connection(url.host, url.port, ssl=context)
    try:
        return writer.get_extra_info("ssl_object").getpeercert()
    finally:
        writer.close()
        await writer.wait_closed()


async def eventually(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Polls an async check until it returns truthy; the exporter looks once a second."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[misc]
        assert asyncio.get_running_loop().time() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.1)


def replace_file(path: Path, content: bytes | str) -> None:
    """Write beside, then rename over: what cert-manager and editors do (a new inode)."""
    temporary = path.with_name(path.name + ".new")
    if isinstance(content, str):
        temporary.write_text(content)
    else:
        temporary.write_bytes(content)
    temporary.replace(path)


async def metric(run: ExporterProcess, http: aiohttp.ClientSession, name: str, **auth: str) -> str:
    async with http.get(f"{run.base}/metrics", headers=auth or None) as response:
        text = await response.text()
    return next(line.split()[1] for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture
async def secured(
    config_file: Path, lab_ca: LabCA, tmp_path: Path
) -> AsyncIterator[tuple[ExporterProcess, Path]]:
    web = write_web_config(tmp_path, lab_ca, min_version="TLS13")
    async with exporter_process(
        "--config.file", str(config_file), "--web.config.file", str(web)
    ) as running:
        yield running, web


async def test_a_rotated_certificate_and_a_new_tls_floor_apply_without_a_restart(
    secured: tuple[ExporterProcess, Path], lab_ca: LabCA, tmp_path: Path
) -> None:
    run, web = secured
    trusted = lab_ca.client_ssl_context()
    first = await served_certificate(run.base, trusted)
    tls12 = lab_ca.client_ssl_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await served_certificate(run.base, tls12)  # min_version TLS13 refuses it

    rotated = lab_ca.issue(["127.0.0.1", "localhost", "rotated.example"])
    replace_file(tmp_path / "server.key", rotated.private_key_pem.bytes())
    replace_file(tmp_path / "server.crt", b"".join(p.bytes() for p in rotated.cert_chain_pems))
    replace_file(web, web.read_text().replace("min_version: TLS13", "min_version: TLS12"))

    async def new_certificate() -> bool:
        return (await served_certificate(run.base, trusted))["serialNumber"] != first[
            "serialNumber"
        ]

    await eventually(new_certificate, "the rotated certificate served")
    names = [v for k, v in (await served_certificate(run.base, trusted))["subjectAltName"]]
    assert "rotated.example" in names
    await served_certificate(run.base, tls12)  # the new floor: TLS 1.2 is welcome now
    assert run.process.returncode is None and "re-read" in run.log


async def test_users_change_live_and_a_bad_change_keeps_the_running_config(
    secured: tuple[ExporterProcess, Path], lab_ca: LabCA
) -> None:
    run, web = secured
    connector = aiohttp.TCPConnector(ssl=lab_ca.client_ssl_context(), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        old_user = basic(USER, PASSWORD)
        assert (await http.get(f"{run.base}/-/healthy", headers=old_user)).status == 200

        hashed = bcrypt.hashpw(b"new secret", bcrypt.gensalt(rounds=4)).decode()
        replace_file(web, web.read_text().replace(f"  {USER}: ", f"  grafana: {hashed}\n  #: "))
        new_user = basic("grafana", "new secret")

        async def swapped() -> bool:
            return (await http.get(f"{run.base}/-/healthy", headers=new_user)).status == 200

        await eventually(swapped, "the new user accepted")
        # The old user was logged in a moment ago; its remembered login is gone too.
        assert (await http.get(f"{run.base}/-/healthy", headers=old_user)).status == 401
        assert (
            await metric(run, http, "meta_exporter_web_config_last_reload_successful", **new_user)
            == "1.0"
        )

        good = web.read_text()
        replace_file(web, good.replace(hashed, "not-a-bcrypt-hash"))
        await run.wait_log("the change was refused, the running one stays")
        refused = next(line for line in run.lines if "was refused" in line)
        assert f"{web}:2:12: basic_auth_users.grafana: expected a bcrypt hash" in refused, refused
        assert "not-a-bcrypt-hash" not in run.log and hashed not in run.log
        assert (await http.get(f"{run.base}/-/healthy", headers=new_user)).status == 200
        assert (
            await metric(run, http, "meta_exporter_web_config_last_reload_successful", **new_user)
            == "0.0"
        )

        replace_file(web, good)  # fixed: applied again

        async def recovered() -> bool:
            value = await metric(
                run, http, "meta_exporter_web_config_last_reload_successful", **new_user
            )
            return value == "1.0"

        await eventually(recovered, "the fixed web config applied")


async def test_plain_http_and_tls_cannot_be_swapped_live(
    secured: tuple[ExporterProcess, Path], lab_ca: LabCA
) -> None:
    run, web = secured
    text = web.read_text()
    replace_file(web, text[: text.index("tls_server_config:")])
    await run.wait_log("switching to plain HTTP needs a restart")
    # Still TLS, still the same users.
    connector = aiohttp.TCPConnector(ssl=lab_ca.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        response = await http.get(f"{run.base}/-/healthy", headers=basic(USER, PASSWORD))
        assert response.status == 200


async def test_the_web_config_metrics_match_the_reference(
    secured: tuple[ExporterProcess, Path], lab_ca: LabCA
) -> None:
    run, _ = secured
    documented = {
        name: spec
        for name, spec in reference_metrics().items()
        if name.startswith("meta_exporter_web_config_")
    }
    assert len(documented) == 2
    connector = aiohttp.TCPConnector(ssl=lab_ca.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        response = await http.get(f"{run.base}/metrics", headers=basic(USER, PASSWORD))
        text = await response.text()
    for name, (kind, labels) in documented.items():
        assert f"# TYPE {name} {kind}" in text and not labels, name
        value = float(
            next(line.split()[1] for line in text.splitlines() if line.startswith(name + " "))
        )
        assert value == 1.0 if name.endswith("successful") else value > 1.7e9, (name, value)
