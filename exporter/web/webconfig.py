"""--web.config.file: TLS and basic auth for every endpoint, in exporter-toolkit's format.

    tls_server_config:
      cert_file: server.crt          # relative paths: from the web config file's directory
      key_file: server.key
      min_version: TLS12             # TLS10 | TLS11 | TLS12 (default) | TLS13
      max_version: TLS13             # optional
      client_auth_type: NoClientCert # | VerifyClientCertIfGiven | RequireAndVerifyClientCert
      client_ca_file: clients.pem    # needed by the two Verify types
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

Errors name file:line:column like the main config's. No error message, and no log line,
ever shows a hash: a type error says what was expected, not what was found. The running
exporter re-reads the file when it or a file it names changes (webreload.py).
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from types import MappingProxyType
from typing import Any, Literal

from exporter.config import yamlsource
from exporter.config.loader import ConfigError, ConfigProblem
from exporter.config.schema import Builder, Problem
from exporter.config.yamlsource import Document, Position

TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# bcrypt's identifiers; Go's bcrypt (exporter-toolkit) writes $2a$, htpasswd -B $2y$.
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
_BCRYPT_LENGTH = 60


@dataclass(frozen=True, slots=True)
class TlsServerSection:
    cert_file: str
    key_file: str
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName | None = None
    client_auth_type: Literal[
        "NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
    ] = "NoClientCert"
    client_ca_file: str | None = None

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.max_version and _TLS_VERSIONS[self.max_version] < _TLS_VERSIONS[self.min_version]:
            problems.append(("max_version", f"is below min_version {self.min_version}"))
        if self.client_auth_type != "NoClientCert" and not self.client_ca_file:
            problems.append(("client_ca_file", f"{self.client_auth_type} needs client_ca_file"))
        return problems


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files a TLS section named (resolved against the web config file's directory) and
    what they held when read: the context is built from these bytes, and so is a live update
    (webreload.py), so what was validated is exactly what gets loaded."""

    cert: FsPath
    key: FsPath
    client_ca: FsPath | None
    cert_pem: bytes = field(repr=False, default=b"")
    key_pem: bytes = field(repr=False, default=b"")
    client_ca_pem: bytes | None = field(repr=False, default=None)


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the web server needs: a TLS context (None: plain HTTP) and bcrypt hashes by user."""

    ssl_context: ssl.SSLContext | None
    users: Mapping[str, bytes]
    source: str
    tls_files: TlsFiles | None = None

    @property
    def files(self) -> tuple[FsPath, ...]:
        """Every file this config was built from: a change to any one means re-reading."""
        named = (
            (self.tls_files.cert, self.tls_files.key, self.tls_files.client_ca)
            if self.tls_files
            else ()
        )
        return (FsPath(self.source), *(f for f in named if f is not None))

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


@contextmanager
def _in_memory(*contents: bytes) -> Iterator[list[str]]:
    """Paths that read back `contents`: the ssl module loads certificates from paths only.
    Anonymous memory files (no disk, fine on a read-only root filesystem) where Linux offers
    them, else files in a private temporary directory, removed at once."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds: list[int] = []
        try:
            for content in contents:
                fd = os.memfd_create("meta-outage-exporter-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="meta-outage-exporter-tls-") as private:
        paths = []
        for index, content in enumerate(contents):
            path = os.path.join(private, str(index))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            paths.append(path)
        yield paths


def load_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Certificate chain and key from memory. An encrypted key fails at once (empty
    password) instead of OpenSSL prompting on a terminal and blocking the event loop."""
    if b"ENCRYPTED" in key_pem:
        raise ssl.SSLError("the key is encrypted: no pass phrase can be given, use a plain key")
    with _in_memory(cert_pem, key_pem) as (cert, key):
        context.load_cert_chain(cert, key, password=b"")


def read_tls_files(
    section: TlsServerSection, base: FsPath
) -> tuple[TlsFiles | None, list[tuple[str, str]]]:
    """Reads each named file once: the files, or None and a problem per file that cannot be
    read (every one of them, not the first only)."""
    contents: dict[str, bytes | None] = {}
    problems = []
    for key in ("cert_file", "key_file", "client_ca_file"):
        name = getattr(section, key)
        try:
            contents[key] = (base / name).read_bytes() if name else None
        except OSError as exc:
            problems.append((key, f"cannot read {base / name}: {exc.strerror}"))
    if problems:
        return None, problems
    files = TlsFiles(
        base / section.cert_file,
        base / section.key_file,
        base / section.client_ca_file if section.client_ca_file else None,
        contents["cert_file"] or b"",
        contents["key_file"] or b"",
        contents["client_ca_file"],
    )
    return files, []


def server_ssl_context(section: TlsServerSection, files: TlsFiles) -> ssl.SSLContext:
    """A server context from the section and the files' bytes; raises ValueError naming the
    key at fault."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[section.min_version]
    if section.max_version:
        context.maximum_version = _TLS_VERSIONS[section.max_version]
    try:
        load_pair(context, files.cert_pem, files.key_pem)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"cert_file/key_file: cannot load the pair: {exc}") from None
    context.verify_mode = _CLIENT_AUTH[section.client_auth_type]
    if files.client_ca_pem is not None:
        try:
            # A file path, not cadata: OpenSSL's file loader skips text around the PEM blocks.
            with _in_memory(files.client_ca_pem) as (client_ca,):
                context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"client_ca_file: cannot load: {exc}") from None
    return context


def _users(raw: Any, builder: Builder) -> dict[str, bytes]:
    """user -> hash; problems never quote a hash (it is a secret too)."""
    path = ("basic_auth_users",)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        builder.fail(path, "expected a mapping of user name -> bcrypt hash")
        return {}
    users = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user or ":" in user:
            # htpasswd's "user:hash" pasted as a key would put the hash in the path: cut it.
            shown = str(user).split(":", 1)[0]
            builder.fail(
                path,
                f"user {shown!r}: a user name must be non-empty text with no ':'",
                "write htpasswd's user:hash line as  user: hash",
            )
            continue
        encoded = hashed.encode() if isinstance(hashed, str) else b""
        if not (encoded.startswith(_BCRYPT_PREFIXES) and len(encoded) == _BCRYPT_LENGTH):
            builder.fail(
                (*path, user),
                "expected a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)",
                'make one with: htpasswd -nBC 10 "" | tr -d ":\\n"',
            )
            continue
        users[user] = encoded
    return users


def _located(problems: list[Problem], document: Document) -> ConfigError:
    return ConfigError(
        [ConfigProblem(document.position(p.path), p.path, p.message, p.hint) for p in problems]
    )


# A bcrypt hash anywhere in an error (a pasted htpasswd line becomes a key, a duplicate key
# is quoted by the YAML loader...) is cut out before anyone sees the message.
_BCRYPT_TEXT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{1,53}")


def _redact(text: str) -> str:
    return _BCRYPT_TEXT.sub("<bcrypt hash>", text)


def parse(text: str, file: str) -> WebConfig:
    """A WebConfig from exporter-toolkit YAML. Raises ConfigError (file:line:col each),
    whose messages, paths and hints never show a bcrypt hash."""
    try:
        return _parse(text, file)
    except ConfigError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    p.position,
                    tuple(_redact(k) if isinstance(k, str) else k for k in p.path),
                    _redact(p.message),
                    _redact(p.hint),
                )
                for p in exc.problems
            ]
        ) from None


def _parse(text: str, file: str) -> WebConfig:
    try:
        document = yamlsource.load(text, file)
    except yamlsource.YamlSyntaxError as exc:
        raise ConfigError([ConfigProblem(exc.position, (), exc.message)]) from None
    data = document.data
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigProblem(Position(file, 1, 1), (), "the top level must be a mapping")]
        )
    builder = Builder()
    for key in data:
        if key not in ("tls_server_config", "basic_auth_users"):
            builder.fail(
                (key,),
                f"unknown or unsupported key {key!r}",
                "supported: tls_server_config, basic_auth_users",
            )
    users = _users(data.get("basic_auth_users"), builder)
    context, files = None, None
    raw_tls = data.get("tls_server_config")
    if raw_tls is not None:
        base = FsPath(file).parent
        section = builder.build(TlsServerSection, raw_tls, ("tls_server_config",))
        if section is not None:
            files, unreadable = read_tls_files(section, base)
            for field, message in unreadable:
                builder.fail(("tls_server_config", field), message)
        if section is not None and files is not None and not builder.problems:
            try:
                context = server_ssl_context(section, files)
            except ValueError as exc:
                key = str(exc).split(":", 1)[0].split("/", 1)[0]
                builder.fail(("tls_server_config", key), str(exc))
    if builder.problems:
        raise _located(builder.problems, document)
    return WebConfig(context, MappingProxyType(users), file, files)


def load(path: str) -> WebConfig:
    try:
        text = FsPath(path).read_text()
    except OSError as exc:
        problem = f"cannot read web config file: {exc.strerror}"
        raise ConfigError([ConfigProblem(Position(path, 1, 1), (), problem)]) from None
    except UnicodeDecodeError:
        problem = "web config file is not UTF-8 text"
        raise ConfigError([ConfigProblem(Position(path, 1, 1), (), problem)]) from None
    return parse(text, path)
