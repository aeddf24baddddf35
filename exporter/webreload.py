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

Refused the same way, because they need a restart: switching between plain HTTP and TLS
(the listener would have to be rebuilt), and any change to client certificate checking
(client_auth_type, client_ca_file or its contents): a client resuming an earlier TLS session
skips the certificate check, so a live change would not reach everyone.
"""

from __future__ import annotations

import asyncio
import logging
import os
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


def _client_checking(config: WebConfig) -> tuple[ssl.VerifyMode, bytes | None]:
    context, files = config.ssl_context, config.tls_files
    assert context is not None and files is not None
    return context.verify_mode, files.client_ca_pem


def apply_tls(live: ssl.SSLContext, new: WebConfig, current: WebConfig) -> None:
    """Copy the new certificate, key and TLS versions into the listening context."""
    assert new.ssl_context is not None and new.tls_files is not None
    if _client_checking(new) != _client_checking(current):
        raise RestartNeeded(
            "client certificate checking changed (client_auth_type, client_ca_file or its "
            "contents): a restart applies it, since resumed TLS sessions would skip it"
        )
    load_pair(live, new.tls_files.cert_pem, new.tls_files.key_pem)
    live.minimum_version = new.ssl_context.minimum_version
    live.maximum_version = new.ssl_context.maximum_version


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
        self._seen = fingerprint(initial.files)
        self._moving: Fingerprint | None = None  # changed at the last look: let it settle
        self._refused_at: float | None = None
        self._last_error = ""
        self.last_successful = True
        self.last_success_time = clock()

    def check(self) -> bool | None:
        """Re-read if anything changed (and has held still since the last look), or to retry
        a refused config: True applied, False refused, None nothing to do."""
        now = fingerprint(self.current.files)
        retry = (
            self._refused_at is not None and self.monotonic() - self._refused_at >= RETRY_REFUSED
        )
        if now == self._seen and not retry:
            self._moving = None
            return None
        if now != self._seen and now != self._moving:
            self._moving = now  # still being written, perhaps: read it at the next look
            return None
        self._seen, self._moving = now, None
        try:
            new = self.load(self.current.source)
            self._apply(new)
        except Exception as exc:  # whatever it is, the running config must keep serving
            self._refuse(exc)
            return False
        # The new config may name other files: watch those from now on. Files unchanged
        # keep the marks taken before reading, so a write that landed meanwhile is seen.
        if new.files != self.current.files:
            self._seen = fingerprint(new.files)
        self.current = new
        self.last_successful, self._refused_at, self._last_error = True, None, ""
        self.last_success_time = self.clock()
        log.info(
            "web config %s re-read: %d users, %s",
            new.source,
            len(new.users),
            "TLS" if new.ssl_context else "plain HTTP",
        )
        return True

    def _refuse(self, exc: Exception) -> None:
        self.last_successful = False
        self._refused_at = self.monotonic()
        # ConfigError and RestartNeeded messages are ours and never quote a secret; anything
        # else is named by its type only.
        known = isinstance(exc, webconfig.ConfigError | RestartNeeded | OSError | ssl.SSLError)
        error = str(exc) if known else f"unexpected {type(exc).__name__}"
        if error != self._last_error:  # retries of the same mistake are not news
            self._last_error = error
            log.error(
                "web config %s: the change was refused, the running one stays: %s",
                self.current.source,
                error,
            )

    def _apply(self, new: WebConfig) -> None:
        if (new.ssl_context is None) != (self.live_context is None):
            wanted = "TLS" if new.ssl_context else "plain HTTP"
            raise RestartNeeded(f"switching to {wanted} needs a restart")
        if self.live_context is not None:
            apply_tls(self.live_context, new, self.current)
        if self.current.users and not new.users:
            log.warning("web config %s has no users left: basic auth is off", new.source)
        self.auth.replace_users(new.users)

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
