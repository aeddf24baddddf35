"""A lab certificate authority for the simulated Meta edge, built on trustme.

Clients (the exporter under test) trust only the bundle written by `LabCA.ca_pem_path`;
servers get leaf certificates in one of a few conditions (valid, expired, expiring at a
chosen time, signed by an unknown CA, issued for some other host) so every TLS failure
the exporter classifies can be produced for real on loopback or in the lab.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = [
    "CERT_CONDITIONS",
    "CertSpec",
    "LabCA",
    "SniCertificates",
]

CA_BUNDLE_NAME = "lab-ca.pem"
CA_KEY_NAME = "lab-ca.key"  # the root's private key, next to the bundle
WRONG_HOST_NAME = "wrong-host.lab.invalid"
# How long an "expired" certificate has been dead and how long it had lived.
EXPIRED_AGO = dt.timedelta(days=1)
TYPICAL_LIFETIME = dt.timedelta(days=90)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class CertSpec:
    """The condition of one leaf certificate.

    `names=None` means "the hostnames asked for"; anything else is issued instead of them,
    which is how a wrong-host certificate is made.
    """

    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    wrong_ca: bool = False
    names: tuple[str, ...] | None = None

    @classmethod
    def valid(cls) -> CertSpec:
        return cls()

    @classmethod
    def expired(cls, ago: dt.timedelta = EXPIRED_AGO) -> CertSpec:
        end = _utcnow() - ago
        return cls(not_before=end - TYPICAL_LIFETIME, not_after=end)

    @classmethod
    def expiring_at(cls, when: dt.datetime) -> CertSpec:
        # Started a normal lifetime before its end, but never in the future (still valid now).
        start = min(when - TYPICAL_LIFETIME, _utcnow() - dt.timedelta(minutes=5))
        return cls(not_before=start, not_after=when)

    @classmethod
    def unknown_ca(cls) -> CertSpec:
        return cls(wrong_ca=True)

    @classmethod
    def wrong_host(cls, name: str = WRONG_HOST_NAME) -> CertSpec:
        return cls(names=(name,))


# Condition names as a lab config or a fault API would spell them.
CERT_CONDITIONS: Mapping[str, Callable[[], CertSpec]] = {
    "valid": CertSpec.valid,
    "expired": CertSpec.expired,
    "wrong_ca": CertSpec.unknown_ca,
    "wrong_host": CertSpec.wrong_host,
}


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    # Readers in other processes see the old file or the whole new one, never a part.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _new_server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # The simulated front ends speak HTTP/1.1 only (aiohttp's server).
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class LabCA:
    """The lab's trusted root (plus an untrusted one for "unknown CA" certificates).

    With `intermediate=True` leaves are issued by an intermediate CA and served with it,
    like real public certificates, so chain building is exercised too.
    """

    def __init__(self, *, intermediate: bool = True, root: trustme.CA | None = None) -> None:
        # `root` is given only by `load()`: a root persisted by another process.
        self.ca = root or trustme.CA(organization_name="meta-outage-exporter lab root")
        self._issuer = self.ca.create_child_ca() if intermediate else self.ca
        self._intermediate = intermediate
        self._other_issuer: trustme.CA | None = None

    def save(self, directory: str | Path) -> Path:
        """Persist the trusted root (certificate and key) in `directory`; returns the bundle.

        The key is written first and each file is renamed into place, so a bundle that
        exists is always complete and its key is there too (see `is_saved_in`). Only the
        root is kept: each process makes its own intermediate, which it serves in the chain.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / CA_KEY_NAME, self.ca.private_key_pem.bytes(), mode=0o600)
        bundle = folder / CA_BUNDLE_NAME
        _write_atomically(bundle, self.ca_pem(), mode=0o644)
        return bundle

    @classmethod
    def load(cls, directory: str | Path, *, intermediate: bool = True) -> LabCA:
        """The lab CA whose root `save()` wrote to `directory`."""
        folder = Path(directory)
        root = trustme.CA.from_pem(
            (folder / CA_BUNDLE_NAME).read_bytes(), (folder / CA_KEY_NAME).read_bytes()
        )
        return cls(intermediate=intermediate, root=root)

    @staticmethod
    def is_saved_in(directory: str | Path) -> bool:
        return (Path(directory) / CA_BUNDLE_NAME).is_file()

    @property
    def other_issuer(self) -> trustme.CA:
        """A CA no lab client trusts; created on first use."""
        if self._other_issuer is None:
            root = trustme.CA(organization_name="meta-outage-exporter untrusted root")
            self._other_issuer = root.create_child_ca() if self._intermediate else root
        return self._other_issuer

    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def ca_pem_path(self, directory: str | Path) -> Path:
        """Write the trusted root to `directory` and return the file (for `tls.ca_file`)."""
        path = Path(directory) / CA_BUNDLE_NAME
        path.write_bytes(self.ca_pem())
        return path

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the lab root."""
        # cadata given: create_default_context then loads no system roots.
        return ssl.create_default_context(cadata=self.ca_pem().decode("ascii"))

    def issue(self, hostnames: Iterable[str], spec: CertSpec | None = None) -> trustme.LeafCert:
        spec = spec or CertSpec()
        names = tuple(spec.names if spec.names is not None else hostnames)
        if not names:
            raise ValueError("a certificate needs at least one hostname or IP address")
        issuer = self.other_issuer if spec.wrong_ca else self._issuer
        return issuer.issue_cert(
            *names,
            common_name=names[0],
            not_before=spec.not_before,
            not_after=spec.not_after,
        )

    def context_for(self, hostnames: Iterable[str], spec: CertSpec | None = None) -> ssl.SSLContext:
        ctx = _new_server_context()
        self.issue(hostnames, spec).configure_cert(ctx)
        return ctx

    def server_ssl_context(
        self,
        hostnames: Iterable[str],
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        wrong_ca: bool = False,
    ) -> ssl.SSLContext:
        """A server context presenting one leaf for `hostnames` (DNS names, wildcards, IPs)."""
        if not_after is not None and not_before is None and not_after <= _utcnow():
            not_before = not_after - TYPICAL_LIFETIME  # keep notBefore < notAfter
        spec = CertSpec(not_before=not_before, not_after=not_after, wrong_ca=wrong_ca)
        return self.context_for(hostnames, spec)

    def sni_server(
        self,
        specs: Mapping[str, CertSpec] | None = None,
        *,
        default_hostnames: Iterable[str] = ("127.0.0.1",),
    ) -> SniCertificates:
        """One listener, one leaf per SNI name; see `SniCertificates`."""
        return SniCertificates(self, specs or {}, default_hostnames=default_hostnames)


class SniCertificates:
    """Picks the served leaf by SNI, so one listener can stand in for many hostnames.

    Keys are hostnames or one-label wildcards ("*.facebook.com"); an exact key wins over a
    wildcard. Clients sending no SNI or an unknown name get the default leaf. `set()` may
    be called while serving: the next handshake sees the new certificate.
    """

    def __init__(
        self,
        ca: LabCA,
        specs: Mapping[str, CertSpec],
        *,
        default_hostnames: Iterable[str] = ("127.0.0.1",),
    ) -> None:
        self._ca = ca
        self._specs: dict[str, CertSpec] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}
        self.ssl_context = ca.context_for(default_hostnames)
        self.ssl_context.sni_callback = self._on_sni
        for name, spec in specs.items():
            self.set(name, spec)

    @property
    def specs(self) -> Mapping[str, CertSpec]:
        return dict(self._specs)

    def set(self, hostname: str, spec: CertSpec | None = None) -> None:
        # Issue now, not in the handshake callback, which must stay fast and cannot fail.
        spec = spec or CertSpec()
        key = hostname.lower().rstrip(".")
        self._contexts[key] = self._ca.context_for([key], spec)
        self._specs[key] = spec

    def remove(self, hostname: str) -> None:
        key = hostname.lower().rstrip(".")
        self._contexts.pop(key, None)
        self._specs.pop(key, None)

    def select(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for `server_name`, or None for the default leaf."""
        if not server_name:
            return None
        name = server_name.lower().rstrip(".")
        exact = self._contexts.get(name)
        if exact is not None or "." not in name:
            return exact
        return self._contexts.get("*." + name.split(".", 1)[1])

    def _on_sni(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        chosen = self.select(server_name)
        if chosen is not None:
            sslobj.context = chosen
