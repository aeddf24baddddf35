"""--web.config.file stays live: re-read when it, or a file it names, changes.

exporter-toolkit reads its web config on every request, so rotated certificates and changed
users take effect without a restart; operators (and cert-manager) rely on that. Here the
files are looked at once a second (a stat each, no read when nothing changed), and a change
is read once it has held still for a tick, so a rotation written in two steps is not caught
half done:

- users: replaced for the next request, remembered logins forgotten;
- TLS: the new certificate and key (the very bytes that were validated) and TLS versions go
  into the listening context in place: new connections get them, open ones keep theirs;
- a change that does not load is refused, logged when its error changes, and the running
  config stays (`meta_exporter_web_config_last_reload_successful` 0), like a bad main config;
  refused configs are read again every RETRY_REFUSED seconds, as they may name files that
  appear later.

Refused the same way, because it needs a restart: switching between plain HTTP and TLS (the
listener would have to be rebuilt). Client certificate checking may loosen live (a laxer
client_auth_type, CAs added); made stricter (a stricter type, a CA removed) it would not
reach a client resuming an earlier TLS session, which skips the certificate check: the rest
of such a change is applied, and the metric stays 0 and the log says to restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import webconfig
from .webauth import BasicAuth
from .webconfig import WebConfig, load_pair

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0
RETRY_REFUSED = 5.0

Fingerprint = tuple[tuple[str, int, int, int] | tuple[str], ...]


def fingerprint(paths: tuple[Path, ...]) -> Fingerprint:
    """What identifies the files' contents cheaply: mtime, size and inode (a rotated file is
    often a new inode: a symlink swap, as Kubernetes does for mounted secrets)."""
    marks: list[tuple[str, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            marks.append((str(path),))
            continue
        marks.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(marks)


class RestartNeeded(ValueError):
    """A change the running server cannot take in place."""


# Files whose last change is younger than this are left to settle: a same-size rewrite
# within a coarse timestamp tick of our look would otherwise never show.
RACY_NS = 1_000_000_000
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _racy(marks: Fingerprint) -> bool:
    recent = time.time_ns() - RACY_NS
    return any(len(mark) == 4 and mark[1] > recent for mark in marks)


def client_checking(config: WebConfig) -> tuple[ssl.VerifyMode, frozenset[bytes]]:
    """What client certificate checking a config asks for: the mode and the CA certificates
    (DER, so comments and spacing in the file do not count as a change)."""
    context, files = config.ssl_context, config.tls_files
    if context is None or files is None:
        return ssl.CERT_NONE, frozenset()
    pem = files.client_ca_pem or b""
    return context.verify_mode, frozenset(
        ssl.PEM_cert_to_DER_cert(block.decode("ascii")) for block in _PEM_CERT.findall(pem)
    )


def apply_client_checking(
    live: ssl.SSLContext,
    enforced: tuple[ssl.VerifyMode, frozenset[bytes]],
    wanted: tuple[ssl.VerifyMode, frozenset[bytes]],
) -> str | None:
    """Loosen in place (a laxer mode, more trusted CAs); a stricter mode or a CA dropped needs
    a restart, since a client resuming an earlier TLS session skips the certificate check.
    Returns why a restart is needed, or None."""
    (mode, cas), (new_mode, new_cas) = enforced, wanted
    if new_mode > mode or (new_mode != ssl.CERT_NONE and not new_cas >= cas):
        return (
            "client certificate checking became stricter (client_auth_type, or a CA removed "
            "from client_ca_file): restart to apply it; the rest of the change is applied"
        )
    if new_cas - cas:
        live.load_verify_locations(cadata=b"".join(sorted(new_cas - cas)))
    live.verify_mode = new_mode
    return None


class LiveWebConfig:
    """The web config the server runs with, and the loop that keeps it current."""

    def __init__(
        self,
        initial: WebConfig,
        auth: BasicAuth,
        *,
        load: Callable[[str], WebConfig] = webconfig.load,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.current = initial
        self.auth = auth
        self.load = load
        self.clock = clock
        self.monotonic = monotonic
        # The listening context: changed in place, never replaced.
        self.live_context = initial.ssl_context
        self.enforced = client_checking(initial)  # what the live context checks of clients
        self._seen = fingerprint(initial.files)
        self._moving: Fingerprint | None = None  # changed at the last look: let it settle
        self._refused_at: float | None = None
        self._last_error = ""
        self.last_successful = True
        self.last_success_time = clock()

    def check(self) -> bool | None:
        """Re-read if anything changed (and has held still since the last look), or to retry
        a refused config: True applied, False refused (or applied but for a part that needs a
        restart), None nothing to do."""
        now = fingerprint(self.current.files)
        retry = (
            self._refused_at is not None and self.monotonic() - self._refused_at >= RETRY_REFUSED
        )
        if now == self._seen and not retry:
            self._moving = None
            return None
        if now != self._seen and (now != self._moving or _racy(now)):
            self._moving = now  # still being written, perhaps: read it at a later look
            return None
        self._seen, self._moving = now, None
        try:
            new = self.load(self.current.source)
            restart_needed = self._apply(new)
        except Exception as exc:  # whatever it is, the running config must keep serving
            self._refuse(exc)
            return False
        # Watch the new config's files. Those already watched keep the marks taken before
        # reading, so a write that landed meanwhile is seen; new ones are read again once
        # they have been seen to hold still.
        before = {mark[0]: mark for mark in now}
        self._seen = tuple(before.get(str(p), (str(p), -1, -1, -1)) for p in new.files)
        self.current = new
        self._refused_at = None
        self.last_success_time = self.clock()
        log.info(
            "web config %s re-read: %d users, %s",
            new.source,
            len(new.users),
            "TLS" if new.ssl_context else "plain HTTP",
        )
        if restart_needed:
            self._complain(restart_needed)
            return False
        self.last_successful, self._last_error = True, ""
        return True

    def _refuse(self, exc: Exception) -> None:
        self._refused_at = self.monotonic()
        # ConfigError and RestartNeeded messages are ours and never quote a secret; anything
        # else is named by its type only.
        known = isinstance(exc, webconfig.ConfigError | RestartNeeded | OSError | ssl.SSLError)
        self._complain(
            "the change was refused, the running one stays: "
            + (str(exc) if known else f"unexpected {type(exc).__name__}")
        )

    def _complain(self, error: str) -> None:
        self.last_successful = False
        if error != self._last_error:  # retries of the same mistake are not news
            self._last_error = error
            log.error("web config %s: %s", self.current.source, error)

    def _apply(self, new: WebConfig) -> str | None:
        """Apply what can be applied in place; returns why the rest needs a restart."""
        if (new.ssl_context is None) != (self.live_context is None):
            wanted = "TLS" if new.ssl_context else "plain HTTP"
            raise RestartNeeded(f"switching to {wanted} needs a restart")
        restart_needed = None
        if self.live_context is not None:
            assert new.ssl_context is not None and new.tls_files is not None
            load_pair(self.live_context, new.tls_files.cert_pem, new.tls_files.key_pem)
            self.live_context.minimum_version = new.ssl_context.minimum_version
            self.live_context.maximum_version = new.ssl_context.maximum_version
            wanted = client_checking(new)
            restart_needed = apply_client_checking(self.live_context, self.enforced, wanted)
            if restart_needed is None:
                self.enforced = wanted
        if self.current.users and not new.users:
            log.warning("web config %s has no users left: basic auth is off", new.source)
        self.auth.replace_users(new.users)
        return restart_needed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            self.check()

    def collector(self) -> Collector:
        return _WebConfigCollector(self)


class _WebConfigCollector(Collector):
    def __init__(self, live: LiveWebConfig) -> None:
        self.live = live

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "meta_exporter_web_config_last_reload_successful",
            "1 if the last change to --web.config.file (or a file it names) was applied; "
            "0: it was refused and the previous web config still serves.",
            value=1.0 if self.live.last_successful else 0.0,
        )
        yield GaugeMetricFamily(
            "meta_exporter_web_config_last_reload_success_timestamp_seconds",
            "Unix time the web config in use was loaded.",
            value=self.live.last_success_time,
        )
