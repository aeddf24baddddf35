"""One HTTP exchange on libcurl, driven by the event loop: the HTTP prober's engine.

libcurl (the pycurl wheel bundles it with OpenSSL, nghttp2, ngtcp2 and nghttp3) speaks
HTTP/1.1, HTTP/2 and HTTP/3 as browsers and Meta's apps do. What every exchange holds to:
- libcurl never resolves a name. The URL's host:port is pinned, with CONNECT_TO, to the
  address the exporter's resolver chose, on a handle of its own (RESOLVE entries would leak
  to other handles of a shared multi); no proxy is used, whatever the environment says.
- The egress policy holds where libcurl opens a socket, TCP and UDP alike
  (OPENSOCKETFUNCTION refuses), and again before the request goes out (PREREQFUNCTION).
- A fresh connection and a full handshake every time: no connection reuse, no TLS session
  cache. Otherwise connect and tls read 0.
- Phases come from libcurl's own clock (the *_TIME_T infos), named as blackbox_exporter
  names them. On a deadline, the phase in progress is the first one libcurl had not done.
- The body is capped while it arrives, decoded bytes counted.
- A Python exception in a callback never reaches libcurl: the transfer is aborted and the
  exception raised here. The probe's deadline is asyncio's, whatever libcurl does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pycurl
from multidict import CIMultiDict, CIMultiDictProxy

from ..egress import EgressPolicy
from ..model import Phase, Reason
from ..resolver import family_of
from .base import ProbeFailure, ProbeRun
from .net import VERIFY_REASONS, reason_for_errno

# `http_version` of a check -> what libcurl is asked for. "2" offers h2 and http/1.1 by ALPN,
# as browsers do (plain http:// stays 1.1); "3" is QUIC only, never a fallback to TCP.
HTTP_VERSIONS = {
    "1.1": pycurl.CURL_HTTP_VERSION_1_1,
    "2": pycurl.CURL_HTTP_VERSION_2TLS,
    "3": pycurl.CURL_HTTP_VERSION_3ONLY,
}
# CURLINFO_HTTP_VERSION -> the version a probe used, as exposed.
_USED_VERSIONS = {
    pycurl.CURL_HTTP_VERSION_1_0: "1.0",
    pycurl.CURL_HTTP_VERSION_1_1: "1.1",
    pycurl.CURL_HTTP_VERSION_2_0: "2",
    pycurl.CURL_HTTP_VERSION_3: "3",
}
# Beyond the probe's deadline: libcurl's own timeouts are only a backstop for asyncio's.
_BACKSTOP = 1.0

# libcurl error codes (curl.h, CURLE_*) the failure mapping tells apart.
_E_COULDNT_CONNECT = 7
_E_SEND_ERROR = 55
_E_RECV_ERROR = 56
_E_OPERATION_TIMEDOUT = 28
_E_PEER_FAILED_VERIFICATION = 60
_E_FILESIZE_EXCEEDED = 63

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """One exchange: the URL as written, and the address its host:port is pinned to."""

    url: str
    host: str
    port: int
    address: str
    method: str = "GET"
    headers: tuple[str, ...] = ()  # "Name: value"
    body: bytes | None = None
    http_version: str = "2"
    ca_file: str | None = None
    max_body_bytes: int = 1024 * 1024
    user_agent: str = ""
    # This address's share of the time left (several addresses to try), None: all of it.
    connect_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    http_version: str
    # Where a 3xx points, made absolute by libcurl; None without a Location.
    redirect_url: str | None


@dataclass(frozen=True, slots=True)
class Marks:
    """libcurl's clock for one exchange, seconds from its start; 0.0 = not reached."""

    connected: float
    handshaken: float  # TLS (or QUIC) handshake done; 0.0 for plain http
    request_sent: float
    first_byte: float
    total: float

    @classmethod
    def of(cls, curl: pycurl.Curl) -> Marks:
        def mark(info: int) -> float:
            return float(curl.getinfo(info)) / 1e6

        return cls(
            connected=mark(pycurl.CONNECT_TIME_T),
            handshaken=mark(pycurl.APPCONNECT_TIME_T),
            request_sent=mark(pycurl.POSTTRANSFER_TIME_T),
            first_byte=mark(pycurl.STARTTRANSFER_TIME_T),
            total=mark(pycurl.TOTAL_TIME_T),
        )


def split_phases(
    marks: Marks, *, tls: bool, finished: bool
) -> tuple[dict[Phase, float], Phase | None, float]:
    """Pure: (time per completed phase, the phase still in progress or None, when it began).

    As blackbox_exporter: connect up to the connection, tls up to the handshake's end,
    processing from the request sent to the answer's first byte, transfer from there to the
    end. libcurl stamps a mark only once its step is done, and may stamp later marks on a
    failed transfer (POSTTRANSFER on a refused connect), so each counts only after the one
    before it.
    """
    steps = [(Phase.CONNECT, marks.connected)]
    if tls:
        steps.append((Phase.TLS, marks.handshaken))
    steps.append((Phase.PROCESSING, marks.first_byte))
    steps.append((Phase.TRANSFER, marks.total if finished else 0.0))
    done: dict[Phase, float] = {}
    reached = 0.0
    for phase, end in steps:
        if end <= 0.0:
            return done, phase, reached
        start = marks.request_sent if phase is Phase.PROCESSING else reached
        done[phase] = max(0.0, end - max(start, reached))
        reached = end
    return done, None, reached


def _guarded(abort: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A libcurl callback that never raises into libcurl: the first exception is kept on the
    transfer (raised once libcurl has stopped) and `abort` tells libcurl to stop."""

    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def guarded(self: _Transfer, *args: Any) -> Any:
            try:
                return method(self, *args)
            except BaseException as exc:  # kept, raised once libcurl has stopped
                if self.error is None:
                    self.error = exc
                return abort

        return guarded

    return wrap


class _Transfer:
    """The callbacks of one exchange and what they collect."""

    def __init__(self, request: Request, policy: EgressPolicy) -> None:
        self.request = request
        self.policy = policy
        self.sockets: list[socket.socket] = []
        self.header_lines: list[bytes] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.error: BaseException | None = None
        self.tls_version: str | None = None
        # When the TLS ClientHello went out, i.e. TCP had connected: libcurl stamps its
        # connect mark only once TLS is done too, so a stalled handshake would read as connect.
        self.hello_sent_at: float | None = None

    @_guarded(pycurl.SOCKET_BAD)
    def open_socket(self, _purpose: int, address: Any) -> socket.socket:
        self.policy.require(address.addr[0], "address")
        sock = socket.socket(address.family, address.socktype, address.protocol)
        # pycurl uses a duplicate of its descriptor: ours is closed after the transfer.
        self.sockets.append(sock)
        return sock

    @_guarded(pycurl.PREREQFUNC_ABORT)
    def before_request(self, peer: str, _local: str, _peer_port: int, _local_port: int) -> int:
        self.policy.require(peer, "address")
        return pycurl.PREREQFUNC_OK

    @_guarded(-1)
    def header(self, line: bytes) -> None:
        if line.startswith(b"HTTP/"):  # a new answer begins (after a 1xx, say)
            self.header_lines.clear()
        self.header_lines.append(line)

    @_guarded(0)
    def write(self, chunk: bytes) -> int | None:
        self.size += len(chunk)
        if self.size > self.request.max_body_bytes:
            self.too_large = True
            return 0  # fewer bytes taken than given: libcurl aborts
        self.chunks.append(chunk)
        return None

    @_guarded(None)
    def debug(self, kind: int, text: bytes) -> None:
        if kind != pycurl.INFOTYPE_TEXT:
            return
        if self.hello_sent_at is None and b"(OUT), TLS handshake, Client hello" in text:
            self.hello_sent_at = time.perf_counter()
        # "SSL connection using TLSv1.3 / TLS_AES_256_GCM_SHA384 / ...": libcurl says it
        # nowhere else.
        elif text.startswith(b"SSL connection using "):
            self.tls_version = text.split()[3].decode("ascii", "replace")

    def marks(self, curl: pycurl.Curl, started: float) -> Marks:
        """libcurl's marks, with TCP's connect from the ClientHello if libcurl has none yet."""
        marks = Marks.of(curl)
        if marks.connected <= 0.0 and self.hello_sent_at is not None and not self.quic:
            return replace(marks, connected=max(1e-6, self.hello_sent_at - started))
        return marks

    @property
    def quic(self) -> bool:
        return self.request.http_version == "3"

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def headers(self) -> CIMultiDictProxy[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for raw in self.header_lines[1:]:
            name, sep, value = raw.decode("latin-1").partition(":")
            if sep:
                headers.add(name.strip(), value.strip())
        return CIMultiDictProxy(headers)


# One multi handle per event loop, shared by every exchange: libcurl keeps its parsed CA store
# there (CURLOPT_CA_CACHE_TIMEOUT), which saves re-reading a system bundle of ~150
# certificates per probe. Nothing else is shared: FRESH_CONNECT and FORBID_REUSE keep
# connections apart, SSL_SESSIONID_CACHE off keeps sessions apart, and CONNECT_TO is per
# handle. It hangs on the loop itself (it holds the loop: a weak map keyed by the loop would
# never let go), so it goes with the loop.
_MULTI_ATTRIBUTE = "_meta_exporter_curl_multi"


def _multi() -> pycurl.AsyncCurlMulti:
    loop = asyncio.get_running_loop()
    multi: pycurl.AsyncCurlMulti | None = getattr(loop, _MULTI_ATTRIBUTE, None)
    if multi is None or multi.closed:
        multi = pycurl.AsyncCurlMulti()
        setattr(loop, _MULTI_ATTRIBUTE, multi)
    return multi


@functools.cache
def system_trust() -> tuple[str | None, str | None]:
    """The trust store Python's ssl uses (so the tls prober, and SSL_CERT_FILE / SSL_CERT_DIR
    if set): the wheel's libcurl would use the path its own build chose."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile, paths.capath


def _pin(host: str, port: int, address: str) -> str:
    """CONNECT_TO entry: this host:port goes to address:port, never to a name lookup."""
    shown = f"[{host}]" if ":" in host else host
    target = f"[{address}]" if ":" in address else address
    return f"{shown}:{port}:{target}:{port}"


def _handle(request: Request, transfer: _Transfer, deadline_left: float) -> pycurl.Curl:
    curl = pycurl.Curl()
    setopt = curl.setopt
    setopt(pycurl.URL, request.url)
    setopt(pycurl.CONNECT_TO, [_pin(request.host, request.port, request.address)])
    setopt(pycurl.PROXY, "")  # "" disables proxies, the *_proxy environment included
    setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    setopt(pycurl.HTTP_VERSION, HTTP_VERSIONS[request.http_version])
    setopt(pycurl.FRESH_CONNECT, 1)
    setopt(pycurl.FORBID_REUSE, 1)
    setopt(pycurl.SSL_SESSIONID_CACHE, 0)
    setopt(pycurl.OPT_CERTINFO, 1)
    ca_file, ca_path = (request.ca_file, None) if request.ca_file else system_trust()
    if ca_file:
        setopt(pycurl.CAINFO, ca_file)
    if ca_path:
        setopt(pycurl.CAPATH, ca_path)
    setopt(pycurl.NOSIGNAL, 1)
    connect_timeout = request.connect_timeout or deadline_left + _BACKSTOP
    setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(connect_timeout * 1000)))
    setopt(pycurl.TIMEOUT_MS, max(1, int((deadline_left + _BACKSTOP) * 1000)))
    setopt(pycurl.FOLLOWLOCATION, 0)  # redirects are the prober's: each hop resolved by us
    setopt(pycurl.ACCEPT_ENCODING, "")  # every encoding libcurl decodes
    setopt(pycurl.MAXFILESIZE_LARGE, request.max_body_bytes)
    setopt(pycurl.USERAGENT, request.user_agent)
    setopt(pycurl.HTTPHEADER, [*request.headers, "Expect:"])
    if request.method == "HEAD":
        setopt(pycurl.NOBODY, 1)
    elif request.method != "GET" or request.body is not None:
        setopt(pycurl.CUSTOMREQUEST, request.method)
        setopt(pycurl.POSTFIELDS, request.body or b"")
    setopt(pycurl.OPENSOCKETFUNCTION, transfer.open_socket)
    setopt(pycurl.PREREQFUNCTION, transfer.before_request)
    setopt(pycurl.HEADERFUNCTION, transfer.header)
    setopt(pycurl.WRITEFUNCTION, transfer.write)
    setopt(pycurl.VERBOSE, 1)
    setopt(pycurl.DEBUGFUNCTION, transfer.debug)
    return curl


def _expiry(curl: pycurl.Curl) -> float | None:
    """The leaf certificate's notAfter, from CERTINFO (empty when no handshake finished)."""
    chain = curl.getinfo(pycurl.INFO_CERTINFO)
    for key, value in chain[0] if chain else ():
        if key == "Expire date":
            try:
                return float(ssl.cert_time_to_seconds(value))
            except ValueError:
                return None
    return None


def _used_version(curl: pycurl.Curl) -> str | None:
    return _USED_VERSIONS.get(curl.getinfo(pycurl.INFO_HTTP_VERSION))


def _failure(
    code: int, message: str, curl: pycurl.Curl, request: Request, phase: Phase | None
) -> Exception:
    """What a libcurl error means for the probe, by the phase it struck in."""
    quic = request.http_version == "3"
    if code == _E_OPERATION_TIMEDOUT:
        # Only this address's share of a connect runs out before asyncio's deadline.
        reason = Reason.QUIC_TIMEOUT if quic and phase is Phase.CONNECT else None
        if phase is Phase.CONNECT:
            return ProbeFailure(
                reason or Reason.TCP_TIMEOUT,
                f"connect to {request.address} port {request.port} timed out",
            )
        return TimeoutError(message)
    if code == _E_PEER_FAILED_VERIFICATION:
        verify = curl.getinfo(pycurl.SSL_VERIFYRESULT)
        # libcurl checks the name itself, after OpenSSL accepted the chain, and says so
        # only in its message ("... subject name ... target hostname").
        reason = VERIFY_REASONS.get(verify)
        if reason is None and "target host" in message:
            reason = Reason.TLS_HOSTNAME_MISMATCH
        return ProbeFailure(
            reason or Reason.TLS_CERT_INVALID,
            f"certificate of {request.host} rejected: {message}",
        )
    if phase is Phase.CONNECT:
        errno = curl.getinfo(pycurl.OS_ERRNO)
        detail = f"connect to {request.address} port {request.port} failed: {message}"
        return ProbeFailure(_connect_reason(code, errno, quic), detail)
    if phase is Phase.TLS:
        return ProbeFailure(
            Reason.TLS_HANDSHAKE, f"TLS handshake with {request.host} failed: {message}"
        )
    return ProbeFailure(Reason.HTTP_PROTOCOL, f"bad HTTP answer: {message}")


def _connect_reason(code: int, errno: int, quic: bool) -> Reason:
    reason = reason_for_errno(errno) if errno else Reason.TCP_UNREACHABLE
    if not quic:
        return reason
    if reason is Reason.TCP_UNREACHABLE and errno:
        return Reason.QUIC_UNREACHABLE
    # Over UDP, an ICMP port unreachable fails the next send or receive: nothing listens
    # for QUIC there.
    if reason is Reason.TCP_REFUSED or code in (_E_COULDNT_CONNECT, _E_SEND_ERROR, _E_RECV_ERROR):
        return Reason.QUIC_REFUSED
    return Reason.QUIC_HANDSHAKE


async def exchange(request: Request, policy: EgressPolicy, run: ProbeRun) -> Answer:
    """Send one request and read its answer, phases folded into run.clock.

    Raises ProbeFailure (the target failed), PolicyViolation (an address outside the egress
    policy), or TimeoutError / CancelledError (the deadline) with the phase in progress on
    run.clock, as every other prober leaves it.
    """
    loop = asyncio.get_running_loop()
    transfer = _Transfer(request, policy)
    curl = _handle(request, transfer, max(0.0, run.deadline - loop.time()))
    tls = request.url.startswith("https:")
    started = time.perf_counter()
    finished = False
    try:
        multi = _multi()
        try:
            await multi.perform(curl)
            finished = True
        except pycurl.error as exc:
            if transfer.error is not None:
                raise transfer.error from None
            code, message = exc.args[0], str(exc.args[1])
            if transfer.too_large or code == _E_FILESIZE_EXCEEDED:
                raise ProbeFailure(
                    Reason.BODY_TOO_LARGE, f"body exceeds {request.max_body_bytes} bytes"
                ) from None
            _, phase, _ = split_phases(transfer.marks(curl, started), tls=tls, finished=False)
            raise _failure(code, message, curl, request, phase) from None
        finally:
            if not finished:  # cancelled (the deadline): out of the multi before it closes
                with contextlib.suppress(RuntimeError):  # RuntimeError: already out
                    multi.remove_handle(curl)
            marks = transfer.marks(curl, started)
            done, current, since = split_phases(marks, tls=tls, finished=finished)
            # A deadline names `current`: it has run since `since`.
            run.clock.record(done, current, started + since)
        if transfer.error is not None:  # a callback failed, yet libcurl finished
            raise transfer.error
        run.facts["address_family"] = family_of(request.address)
        if transfer.tls_version:
            run.facts["tls_version"] = transfer.tls_version
        expiry = _expiry(curl) if tls else None
        if expiry is not None:
            run.facts["tls_expiry"] = expiry
        return Answer(
            status=int(curl.getinfo(pycurl.RESPONSE_CODE)),
            headers=transfer.headers(),
            body=b"".join(transfer.chunks),
            http_version=_used_version(curl) or request.http_version,
            redirect_url=curl.getinfo(pycurl.REDIRECT_URL) or None,
        )
    finally:
        curl.close()
        transfer.close()


__all__ = ["HTTP_VERSIONS", "Answer", "Marks", "Request", "exchange", "split_phases"]
