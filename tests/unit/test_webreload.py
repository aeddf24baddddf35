"""The live web config: when it re-reads, what it applies in place, what it refuses."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter.sim.certs import LabCA
from exporter.web import webconfig
from exporter.web.webauth import BasicAuth
from exporter.web.webreload import RETRY_REFUSED, LiveWebConfig, fingerprint

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
    age(*(p for p in directory.iterdir() if p.is_file()))
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_config(path: Path, clock: Clock | None = None) -> tuple[LiveWebConfig, BasicAuth]:
    initial = webconfig.load(str(path))
    auth = BasicAuth(initial.users)
    return LiveWebConfig(initial, auth, monotonic=clock or Clock()), auth


_AGE = [0]


def age(*paths: Path) -> None:
    """Date files 100 s back, each a millisecond apart: settled, and every change distinct
    however coarse the filesystem's clock (a change younger than 1 s waits to settle)."""
    for path in paths:
        _AGE[0] += 1
        past = time.time_ns() - 100_000_000_000 + _AGE[0] * 1_000_000
        os.utime(path, ns=(past, past))


def touch(path: Path, text: str | bytes) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    age(path)


def settle(live: LiveWebConfig) -> bool | None:
    """A change is read once it held still for a look: the first look only notes it."""
    assert live.check() is None
    return live.check()


def test_nothing_changed_reads_nothing(tmp_path: Path, lab_ca: LabCA) -> None:
    live, _ = live_config(write_tls(tmp_path, lab_ca))
    assert live.check() is None and live.check() is None
    assert [Path(mark[0]).name for mark in fingerprint(live.current.files)] == [
        "web.yml",
        "server.crt",
        "server.key",
    ]


def test_a_change_still_being_written_waits(tmp_path: Path, lab_ca: LabCA) -> None:
    path = write_tls(tmp_path, lab_ca)
    live, _ = live_config(path)
    touch(path, path.read_text())
    assert live.check() is None  # noted
    touch(path, path.read_text().replace("TLS12", "TLS13"))
    assert live.check() is None  # moved again: still waiting
    assert live.check() is True
    assert live.live_context is not None
    assert live.live_context.minimum_version is ssl.TLSVersion.TLSv1_3


def test_a_missing_file_is_refused_once_and_retried_later(tmp_path: Path, lab_ca: LabCA) -> None:
    clock = Clock()
    live, _ = live_config(write_tls(tmp_path, lab_ca), clock)
    before = live.current
    key = (tmp_path / "server.key").read_bytes()
    (tmp_path / "server.key").unlink()
    assert settle(live) is False
    assert live.current is before and not live.last_successful
    assert live.check() is None  # not re-read every second
    (tmp_path / "server.key").write_bytes(key)  # back: a change again, read once settled
    age(tmp_path / "server.key")
    assert settle(live) is True and live.last_successful


def test_a_refused_config_naming_new_files_is_retried_until_they_appear(
    tmp_path: Path, lab_ca: LabCA
) -> None:
    clock = Clock()
    path = write_tls(tmp_path, lab_ca)
    live, _ = live_config(path, clock)
    touch(path, path.read_text().replace("server.crt", "b.crt").replace("server.key", "b.key"))
    assert settle(live) is False
    leaf = lab_ca.issue(["127.0.0.1"])
    (tmp_path / "b.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(tmp_path / "b.key"))
    age(tmp_path / "b.crt", tmp_path / "b.key")
    assert live.check() is None
    clock.now += RETRY_REFUSED
    assert live.check() is True
    assert [Path(mark[0]).name for mark in fingerprint(live.current.files)][1:] == [
        "b.crt",
        "b.key",
    ]


def test_a_certificate_and_tls_versions_go_into_the_listening_context(
    tmp_path: Path, lab_ca: LabCA
) -> None:
    path = write_tls(tmp_path, lab_ca)
    live, _ = live_config(path)
    context = live.live_context
    write_tls(tmp_path, lab_ca, floor="TLS13")
    touch(path, path.read_text())
    assert settle(live) is True
    assert live.live_context is context  # the same object the listener holds
    assert context is not None and context.minimum_version is ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize("change", ["turn on", "replace the CA"])
def test_stricter_client_checking_needs_a_restart_the_rest_applies(
    tmp_path: Path, lab_ca: LabCA, change: str
) -> None:
    path = write_tls(tmp_path, lab_ca, client_ca=change != "turn on")
    live, _ = live_config(path)
    context = live.live_context
    assert context is not None
    mode, cas = context.verify_mode, context.cert_store_stats()["x509_ca"]
    if change == "turn on":
        write_tls(tmp_path, lab_ca, client_ca=True, floor="TLS13")
    else:
        touch(tmp_path / "lab-ca.pem", trustme.CA().cert_pem.bytes())
        touch(path, path.read_text().replace("TLS12", "TLS13"))
    assert settle(live) is False and not live.last_successful
    assert context.verify_mode is mode and context.cert_store_stats()["x509_ca"] == cas
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3  # the rest went live
    assert live.check() is None and not live.last_successful  # until a restart (or a revert)


def test_looser_client_checking_applies_live(tmp_path: Path, lab_ca: LabCA) -> None:
    path = write_tls(tmp_path, lab_ca, client_ca=True)
    live, _ = live_config(path)
    context = live.live_context
    assert context is not None
    ca_file = tmp_path / "lab-ca.pem"
    touch(ca_file, ca_file.read_bytes() + b"\n" + trustme.CA().cert_pem.bytes())  # one more CA
    touch(path, path.read_text().replace("RequireAndVerifyClientCert", "VerifyClientCertIfGiven"))
    assert settle(live) is True
    assert context.verify_mode is ssl.CERT_OPTIONAL
    assert context.cert_store_stats()["x509_ca"] == 2
    # Comments and spacing in the CA file are no change to what is trusted.
    touch(ca_file, b"# our client CAs\n" + ca_file.read_bytes())
    assert settle(live) is True and live.last_successful


def test_a_client_ca_with_text_around_the_pem_loads(tmp_path: Path, lab_ca: LabCA) -> None:
    """`openssl x509 -text` output has a readable header, sometimes not ASCII."""
    path = write_tls(tmp_path, lab_ca, client_ca=True)
    ca_file = tmp_path / "lab-ca.pem"
    ca_file.write_bytes("Subject: O = Müller GmbH\n".encode() + ca_file.read_bytes())
    parsed = webconfig.load(str(path))
    assert parsed.ssl_context is not None
    assert parsed.ssl_context.cert_store_stats()["x509_ca"] == 1


def test_an_encrypted_key_fails_at_once_instead_of_prompting(tmp_path: Path, lab_ca: LabCA) -> None:
    from cryptography.hazmat.primitives import serialization

    path = write_tls(tmp_path, lab_ca)
    key = serialization.load_pem_private_key((tmp_path / "server.key").read_bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass phrase"),
    )
    (tmp_path / "server.key").write_bytes(encrypted)
    with pytest.raises(webconfig.ConfigError, match="cannot load the pair"):
        webconfig.load(str(path))


def test_an_unexpected_error_is_refused_and_the_watch_goes_on(
    tmp_path: Path, lab_ca: LabCA, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tls(tmp_path, lab_ca)
    live, _ = live_config(path)

    def explode(_: str) -> webconfig.WebConfig:
        raise RecursionError("maximum recursion depth exceeded $2b$secret")

    live.load = explode
    touch(path, path.read_text())
    assert settle(live) is False and not live.last_successful
    assert "unexpected RecursionError" in caplog.text and "$2b$" not in caplog.text


async def test_users_are_replaced_and_remembered_logins_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {HASH}\n")
    age(path)
    live, auth = live_config(path)
    assert await auth.verify("alice", b"secret")
    touch(path, f"basic_auth_users:\n  bob: {HASH}\n")
    assert settle(live) is True
    assert not await auth.verify("alice", b"secret")  # not served from the success cache
    assert await auth.verify("bob", b"secret")


@pytest.mark.parametrize("to_tls", [True, False])
def test_plain_and_tls_cannot_swap_live(tmp_path: Path, lab_ca: LabCA, to_tls: bool) -> None:
    plain = f"basic_auth_users:\n  alice: {HASH}\n"
    path = write_tls(tmp_path, lab_ca)
    tls = path.read_text()
    path.write_text(tls if not to_tls else plain)
    age(path)
    live, _ = live_config(path)
    touch(path, tls if to_tls else plain)
    assert settle(live) is False
    assert (live.current.ssl_context is None) is to_tls  # still what it started as
    assert (live.live_context is None) is to_tls


@pytest.mark.parametrize(
    "text",
    [
        f"basic_auth_users:\n  prom:{HASH}:\n",  # an htpasswd line pasted as a key
        f"basic_auth_users:\n  prom:{HASH}:\n  prom:{HASH}:\n",  # twice: a duplicate key
        f"basic_auth_user:\n  prom:{HASH}:\n  prom:{HASH}:\n",  # under a misspelt section
        f"basic_auth_users:\n  {HASH}: x\n",  # a bare hash as a user name
    ],
)
def test_no_error_ever_shows_a_hash(text: str) -> None:
    with pytest.raises(webconfig.ConfigError) as error:
        webconfig.parse(text, "web.yml")
    shown = str(error.value)
    assert HASH[7:29] not in shown, shown  # no part of the salt or digest either
    assert all(HASH[7:29] not in str(p.path) for p in error.value.problems)


def test_a_kubernetes_secret_swap_is_seen(tmp_path: Path, lab_ca: LabCA) -> None:
    """A mounted secret: server.crt -> ..data/server.crt, and an update swaps the ..data
    symlink to a new directory in one rename."""

    def version(name: str) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        leaf = lab_ca.issue(["127.0.0.1"])
        (directory / "server.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(directory / "server.key"))
        age(directory / "server.crt", directory / "server.key")
        return directory

    (tmp_path / "..data").symlink_to(version("..2026_11_01"))
    for name in ("server.crt", "server.key"):
        (tmp_path / name).symlink_to(Path("..data") / name)
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
    age(path)
    live, _ = live_config(path)
    first = live.current.tls_files.cert_pem  # type: ignore[union-attr]

    (tmp_path / "..data_tmp").symlink_to(version("..2026_11_21"))
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")  # the atomic swap
    assert settle(live) is True
    assert live.current.tls_files.cert_pem != first  # type: ignore[union-attr]


def test_a_change_younger_than_a_second_is_left_to_settle(tmp_path: Path, lab_ca: LabCA) -> None:
    """Coarse filesystem clocks: a same-size rewrite within the tick of our look would keep
    the mark we took, so a change is read only once it is a second old."""
    path = write_tls(tmp_path, lab_ca)
    live, _ = live_config(path)
    path.write_text(path.read_text().replace("TLS12", "TLS13"))  # just now
    assert live.check() is None and live.check() is None  # still, but too young to trust
    age(path)  # a second later, as far as the mark can tell
    assert settle(live) is True
