"""TCP connect and TLS handshake for the probers, timed by phase and classified into reasons.

Shared by the tcp, tls and http probers so a refused port or an expired certificate reads
the same whichever check met it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Sequence

from exporter.egress import EgressPolicy
from exporter.model import Phase, Reason
from exporter.net.resolver import family_of

from .base import ProbeFailure, ProbeRun

# OpenSSL X509_V_ERR codes worth their own reason; every other verify failure is cert_invalid.
VERIFY_REASONS = {
    9: Reason.TLS_CERT_INVALID,  # not yet valid
    10: Reason.TLS_CERT_EXPIRED,
    62: Reason.TLS_HOSTNAME_MISMATCH,
    64: Reason.TLS_HOSTNAME_MISMATCH,  # IP address mismatch
}


def readable(path: str) -> bool:
    """os.access for config checks: a path with a NUL byte is unreadable, not a crash."""
    try:
        return os.access(path, os.R_OK)
    except ValueError:
        return False


def ca_file_problem(ca_file: str | None) -> list[tuple[str, str]]:
    """Config check shared by the tls and http params: a CA bundle must be a readable file."""
    if ca_file and not readable(ca_file):
        return [("ca_file", f"cannot read CA bundle {ca_file}")]
    return []


def share(run: ProbeRun, addresses_left: int) -> float:
    """An equal share of the probe's remaining time for one of several addresses."""
    remaining = run.deadline - asyncio.get_running_loop().time()
    return max(0.05, remaining / addresses_left)


def reason_for_errno(number: int | None) -> Reason:
    """The reason a failed connect's errno means."""
    if number == errno.ECONNREFUSED:
        return Reason.TCP_REFUSED
    if number == errno.ECONNRESET:
        return Reason.TCP_RESET
    if number == errno.ETIMEDOUT:
        return Reason.TCP_TIMEOUT
    return Reason.TCP_UNREACHABLE  # ENETUNREACH, EHOSTUNREACH, ... and anything else


def connect_reason(exc: OSError) -> Reason:
    if isinstance(exc, TimeoutError):  # asyncio's, with no errno
        return Reason.TCP_TIMEOUT
    return reason_for_errno(exc.errno)


def tls_failure(exc: BaseException, server_name: str) -> ProbeFailure:
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = VERIFY_REASONS.get(exc.verify_code, Reason.TLS_CERT_INVALID)
        return ProbeFailure(reason, f"certificate of {server_name} rejected: {exc.verify_message}")
    return ProbeFailure(Reason.TLS_HANDSHAKE, f"TLS handshake with {server_name} failed: {exc}")


async def connect(
    addresses: Sequence[str], port: int, run: ProbeRun, policy: EgressPolicy
) -> socket.socket:
    """A connected non-blocking socket to the first address that accepts, in order.

    The egress policy is enforced here, where every tcp and tls probe socket is opened,
    whatever path led to the address (the http prober's sockets are libcurl's: probes.curl
    checks them where libcurl opens them).
    """
    for address in addresses:
        policy.require(address, "address")
    loop = asyncio.get_running_loop()
    last_error: OSError | None = None
    with run.clock.phase(Phase.CONNECT):
        for index, address in enumerate(addresses):
            family = socket.AF_INET6 if family_of(address) == "ipv6" else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if index < len(addresses) - 1:
                    # Not the last address: give it a share of the time left, so one
                    # blackholed address cannot eat the deadline of the ones that work.
                    async with asyncio.timeout(share(run, len(addresses) - index)):
                        await loop.sock_connect(sock, (address, port))
                else:
                    await loop.sock_connect(sock, (address, port))
            except OSError as exc:  # includes TimeoutError from the share running out
                sock.close()
                last_error = exc
                continue
            except BaseException:
                sock.close()
                raise
            run.facts["address_family"] = family_of(address)
            return sock
    assert last_error is not None
    raise ProbeFailure(
        connect_reason(last_error),
        f"connect to port {port} failed: {last_error.strerror or type(last_error).__name__}",
    )


def record_tls_facts(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, run: ProbeRun) -> None:
    if ssl_object is None:
        return
    run.facts["tls_version"] = ssl_object.version()
    certificate = ssl_object.getpeercert()
    if certificate and "notAfter" in certificate:
        run.facts["tls_expiry"] = float(ssl.cert_time_to_seconds(str(certificate["notAfter"])))


async def handshake(
    sock: socket.socket, context: ssl.SSLContext, server_name: str, run: ProbeRun
) -> asyncio.Transport:
    """TLS over a connected socket; the transport is open on return (the caller closes it)."""
    loop = asyncio.get_running_loop()
    with run.clock.phase(Phase.TLS):
        # From here asyncio owns the socket: on failure or cancel it closes the transport
        # and the socket itself. Closing it here too would free the fd number while the
        # dying transport is still registered under it.
        try:
            transport, _ = await loop.create_connection(
                asyncio.Protocol, sock=sock, ssl=context, server_hostname=server_name
            )
        except OSError as exc:  # ssl.SSLError and ConnectionError are OSErrors
            raise tls_failure(exc, server_name) from None
    record_tls_facts(transport.get_extra_info("ssl_object"), run)
    return transport
