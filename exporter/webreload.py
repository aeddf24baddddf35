"""--web.config.file stays live: re-read when it, or a file it names, changes.

exporter-toolkit reads its web config on every request, so rotated certificates and changed
users take effect without a restart; operators (and cert-manager) rely on that. Here the
files are looked at once a second (a stat each, no read when nothing changed):

- users: replaced for the next request, remembered logins forgotten;
- TLS: the new certificate and key, versions and client-auth settings go into the listening
  context in place, so new connections get them and open ones keep theirs;
- a new file that does not load is refused, logged once per change, and the running config
  stays (`meta_exporter_web_config_last_reload_successful` 0), like a bad main config.

Two changes cannot be made in place and are refused the same way: switching between plain
HTTP and TLS (the listener would have to be rebuilt), and dropping a client CA (OpenSSL can
add trusted CAs to a live context, never remove them); both need a restart.
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
from .config import ConfigError
from .webauth import BasicAuth
from .webconfig import WebConfig

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0

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


def _read_client_ca(config: WebConfig) -> bytes | None:
    files = config.tls_files
    return files.client_ca.read_bytes() if files is not None and files.client_ca else None


def apply_tls(live: ssl.SSLContext, new: WebConfig, trusted: bytes | None) -> bytes | None:
    """Copy the new TLS settings into the listening context; returns the client CAs now
    trusted. The new config already loaded its files into a context of its own, so they are
    known to be good. `trusted`: the client CAs the live context was given so far."""
    assert new.ssl_context is not None and new.tls_files is not None
    client_ca = _read_client_ca(new)
    if trusted is not None and client_ca is None:
        raise RestartNeeded("client_ca_file was removed: trusted CAs cannot be dropped live")
    live.load_cert_chain(new.tls_files.cert, new.tls_files.key)
    live.minimum_version = new.ssl_context.minimum_version
    live.maximum_version = new.ssl_context.maximum_version
    live.verify_mode = new.ssl_context.verify_mode
    if client_ca is not None and client_ca != trusted:
        live.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        if trusted is not None:
            log.warning(
                "web config: the client CAs of %s are added; those trusted before stay "
                "trusted until a restart",
                new.tls_files.client_ca,
            )
    return client_ca


class LiveWebConfig:
    """The web config the server runs with, and the loop that keeps it current."""

    def __init__(
        self,
        initial: WebConfig,
        auth: BasicAuth,
        *,
        load: Callable[[str], WebConfig] = webconfig.load,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.current = initial
        self.auth = auth
        self.load = load
        self.clock = clock
        # The listening context: changed in place, never replaced.
        self.live_context = initial.ssl_context
        self._client_ca = _read_client_ca(initial)
        self._seen = fingerprint(initial.files)
        self.last_successful = True
        self.last_success_time = clock()

    def check(self) -> bool | None:
        """Re-read if anything changed: True applied, False refused, None nothing changed."""
        now = fingerprint(self.current.files)
        if now == self._seen:
            return None
        self._seen = now  # a refused change is logged once, not every second
        try:
            new = self.load(self.current.source)
            self._apply(new)
        except (ConfigError, RestartNeeded, ssl.SSLError, OSError) as exc:
            self.last_successful = False
            log.error(
                "web config %s: the change was refused, the running one stays: %s",
                self.current.source,
                exc,
            )
            return False
        # The new config may name other files: watch those from now on.
        self._seen = fingerprint(new.files)
        self.current = new
        self.last_successful = True
        self.last_success_time = self.clock()
        log.info(
            "web config %s re-read: %d users, %s",
            new.source,
            len(new.users),
            "TLS" if new.ssl_context else "plain HTTP",
        )
        return True

    def _apply(self, new: WebConfig) -> None:
        if (new.ssl_context is None) != (self.live_context is None):
            wanted = "TLS" if new.ssl_context else "plain HTTP"
            raise RestartNeeded(f"switching to {wanted} needs a restart")
        if self.live_context is not None:
            self._client_ca = apply_tls(self.live_context, new, self._client_ca)
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
