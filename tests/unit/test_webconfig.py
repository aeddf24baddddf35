"""The web config (exporter-toolkit format), basic auth checking and the /probe rate limit."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path

import bcrypt
import pytest

from exporter.config.loader import ConfigError
from exporter.sim.certs import LabCA
from exporter.web import webconfig
from exporter.web.probe_endpoint import TokenBucket, find_check
from exporter.web.webauth import BasicAuth, parse_basic
from tests.conftest import make_check

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()


def problems(text: str, file: str = "web.yml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        webconfig.parse(text, file)
    return [str(p) for p in caught.value.problems]


def test_users_only_is_plain_http_with_auth() -> None:
    parsed = webconfig.parse(f"basic_auth_users:\n  alice: {HASH}\n", "web.yml")
    assert parsed.ssl_context is None and parsed.scheme == "http"
    assert parsed.users == {"alice": HASH.encode()}


def test_errors_name_file_line_column_and_never_quote_a_hash() -> None:
    text = (
        "tls_server_confg: {}\n"
        "basic_auth_users:\n"
        f"  alice: {HASH[:-5]}\n"
        "  bob: 12\n"
        "http_server_config: {http2: true}\n"
    )
    found = problems(text)
    assert len(found) == 4
    for expected in (
        "web.yml:1:19: tls_server_confg: unknown or unsupported key",
        "web.yml:3:10: basic_auth_users.alice: expected a bcrypt hash",
        "web.yml:4:8: basic_auth_users.bob: expected a bcrypt hash",
        "web.yml:5:21: http_server_config: unknown or unsupported key",
    ):
        assert any(p.startswith(expected) for p in found), (expected, found)
    assert all(HASH[7:30] not in p for p in found)


def test_tls_section_errors(tmp_path: Path) -> None:
    file = str(tmp_path / "web.yml")
    found = problems(
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n  min_version: TLS14\n",
        file,
    )
    assert any(
        p.startswith(f"{file}:4:16: tls_server_config.min_version: expected one of") for p in found
    )
    found = problems("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", file)
    assert found == [
        f"{file}:2:14: tls_server_config.cert_file: cannot read {tmp_path}/nope.crt: No such file or directory",
        f"{file}:3:13: tls_server_config.key_file: cannot read {tmp_path}/nope.key: No such file or directory",
    ]
    found = problems(
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n"
        "  max_version: TLS12\n  client_auth_type: RequireAndVerifyClientCert\n",
        file,
    )
    assert any("max_version: is below min_version TLS13" in p for p in found)
    assert any(
        "client_ca_file: RequireAndVerifyClientCert needs client_ca_file" in p for p in found
    )


def write_pair(directory: Path, lab_ca: LabCA) -> None:
    leaf = lab_ca.issue(["127.0.0.1"])
    (directory / "server.crt").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(directory / "server.key"))


def test_mismatched_key_is_reported(tmp_path: Path, lab_ca: LabCA) -> None:
    write_pair(tmp_path, lab_ca)
    other = lab_ca.issue(["127.0.0.1"])
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    found = problems(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
        str(tmp_path / "web.yml"),
    )
    assert len(found) == 1 and "cannot load the pair" in found[0]


@pytest.mark.parametrize(("min_version", "accepted"), [("TLS12", True), ("TLS13", False)])
async def test_min_version_decides_whether_a_tls12_client_gets_in(
    min_version: str, accepted: bool, tmp_path: Path, lab_ca: LabCA
) -> None:
    write_pair(tmp_path, lab_ca)
    text = f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: {min_version}\n"
    server_context = webconfig.parse(text, str(tmp_path / "web.yml")).ssl_context
    assert server_context is not None

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    client = lab_ca.client_ssl_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        if accepted:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
            writer.close()
        else:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await asyncio.open_connection("127.0.0.1", port, ssl=client)
    finally:
        server.close()
        await server.wait_closed()


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_parse_basic() -> None:
    assert parse_basic(header("alice", "pa:ss")) == ("alice", b"pa:ss")
    assert parse_basic("Bearer abc") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic("Basic " + base64.b64encode(b"no-colon").decode()) is None


async def test_basic_auth_verifies_caches_successes_only_and_expires() -> None:
    now = [0.0]
    auth = BasicAuth({"alice": HASH.encode()}, cache_seconds=10, clock=lambda: now[0])
    calls = []
    original = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return original(password, hashed)

    bcrypt.checkpw = counting  # type: ignore[assignment]
    try:
        assert await auth.verify("alice", b"secret")
        assert await auth.verify("alice", b"secret")  # cached: no second bcrypt
        assert len(calls) == 1
        assert not await auth.verify("alice", b"wrong")
        assert not await auth.verify("alice", b"wrong")  # failures are never cached
        assert not await auth.verify("mallory", b"secret")  # unknown users cost bcrypt too
        assert len(calls) == 4
        now[0] = 11.0
        assert await auth.verify("alice", b"secret")  # expired: checked again
        assert len(calls) == 5
        assert not await auth.verify("alice", b"x" * 100)  # beyond bcrypt's 72 bytes
    finally:
        bcrypt.checkpw = original  # type: ignore[assignment]


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0.0
    now[0] = 100.0
    assert [bucket.take() for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at burst


def test_find_check() -> None:
    checks = (
        make_check("tcp", name="chat", service="whatsapp", host="x", port=1),
        make_check("tcp", name="web", service="facebook", host="x", port=1),
        make_check("tcp", name="web", service="instagram", host="x", port=1),
    )
    assert find_check(checks, "chat", None) is checks[0]
    assert find_check(checks, "web", "instagram") is checks[2]
    assert "several services (facebook, instagram)" in str(find_check(checks, "web", None))
    assert "no configured check 'x'" in str(find_check(checks, "x", None))
