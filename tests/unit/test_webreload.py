"""The live web config: when it re-reads, what it applies in place, what it refuses."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import bcrypt
import pytest

from exporter import webconfig
from exporter.sim.certs import LabCA
from exporter.webauth import BasicAuth
from exporter.webreload import LiveWebConfig, fingerprint

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()


def write_tls(directory: Path, ca: LabCA, *, client_ca: bool = False, floor: str = "TLS12") -> Path:
    leaf = ca.issue(["127.0.0.1"])
    (directory / "server.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(directory / "server.key"))
    text = (
        f"basic_auth_users:\n  alice: {HASH}\n"
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"  min_version: {floor}\n"
    )
    if client_ca:
        ca.ca_pem_path(directory)  # writes lab-ca.pem beside
        text += "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: lab-ca.pem\n"
    path = directory / "web.yml"
    path.write_text(text)
    return path


def live_config(path: Path) -> tuple[LiveWebConfig, BasicAuth]:
    initial = webconfig.load(str(path))
    auth = BasicAuth(initial.users)
    return LiveWebConfig(initial, auth), auth


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse clocks


def test_nothing_changed_reads_nothing(tmp_path: Path, lab_ca: LabCA) -> None:
    live, _ = live_config(write_tls(tmp_path, lab_ca))
    assert live.check() is None
    assert [Path(mark[0]).name for mark in fingerprint(live.current.files)] == [
        "web.yml",
        "server.crt",
        "server.key",
    ]


def test_a_missing_file_is_a_change_and_is_refused(tmp_path: Path, lab_ca: LabCA) -> None:
    live, _ = live_config(write_tls(tmp_path, lab_ca))
    before = live.current
    (tmp_path / "server.key").unlink()
    assert live.check() is False
    assert live.current is before and not live.last_successful
    assert live.check() is None  # the same broken state is not retried every second


def test_versions_and_client_auth_go_into_the_listening_context(
    tmp_path: Path, lab_ca: LabCA
) -> None:
    path = write_tls(tmp_path, lab_ca)
    live, _ = live_config(path)
    context = live.live_context
    assert context is not None and context.verify_mode is ssl.CERT_NONE
    write_tls(tmp_path, lab_ca, client_ca=True, floor="TLS13")
    touch(path, path.read_text())
    assert live.check() is True
    assert live.live_context is context  # the same object the listener holds
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == 1


def test_dropping_a_client_ca_needs_a_restart(tmp_path: Path, lab_ca: LabCA) -> None:
    path = write_tls(tmp_path, lab_ca, client_ca=True)
    live, _ = live_config(path)
    touch(path, path.read_text().split("  client_auth_type")[0])
    assert live.check() is False
    assert live.live_context is not None and live.live_context.verify_mode is ssl.CERT_REQUIRED


async def test_users_are_replaced_and_remembered_logins_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {HASH}\n")
    live, auth = live_config(path)
    assert await auth.verify("alice", b"secret")
    touch(path, f"basic_auth_users:\n  bob: {HASH}\n")
    assert live.check() is True
    assert not await auth.verify("alice", b"secret")  # not served from the success cache
    assert await auth.verify("bob", b"secret")


@pytest.mark.parametrize("to_tls", [True, False])
def test_plain_and_tls_cannot_swap_live(tmp_path: Path, lab_ca: LabCA, to_tls: bool) -> None:
    plain = f"basic_auth_users:\n  alice: {HASH}\n"
    path = write_tls(tmp_path, lab_ca)
    tls = path.read_text()
    path.write_text(tls if not to_tls else plain)
    live, _ = live_config(path)
    touch(path, tls if to_tls else plain)
    assert live.check() is False
    assert (live.current.ssl_context is None) is to_tls  # still what it started as
    assert (live.live_context is None) is to_tls
