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
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, TypeVar

import pycurl
from multidict import CIMultiDict, CIMultiDictProxy

from exporter.egress import EgressPolicy, PolicyViolation
from exporter.model import Phase, Reason
from exporter.net.resolver import family_of

from .base import QUIC_TIMEOUT_REASONS, TIMEOUT_REASONS, ProbeFailure, ProbeRun
from .sockets import VERIFY_REASONS, reason_for_errno

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
_LONGEST = 3600.0

# libcurl errors (curl.h CURLE_*) by what they can mean; pycurl lacks names for the newest.
_HTTP2_STREAM, _HTTP3, _QUIC_CONNECT_ERROR, _TOO_LARGE = 92, 95, 96, 100
# The connection failed before it was up: refused, reset, unreachable (errno tells), or for
# QUIC an ICMP port unreachable failing the next send or receive, or the QUIC handshake.
_CONNECT_ERRORS = frozenset({pycurl.E_COULDNT_CONNECT, pycurl.E_SEND_ERROR, pycurl.E_RECV_ERROR})
_QUIC_CONNECT_ERRORS = _CONNECT_ERRORS | {pycurl.E_SSL_CONNECT_ERROR, _HTTP3, _QUIC_CONNECT_ERROR}
# The TLS handshake failed (certificate verification has its own code).
_TLS_ERRORS = _CONNECT_ERRORS | {pycurl.E_SSL_CONNECT_ERROR}
# The answer was broken: nothing, cut short, not HTTP, a bad stream, headers too large...
_ANSWER_ERRORS = frozenset(
    {
        pycurl.E_GOT_NOTHING,
        pycurl.E_SEND_ERROR,
        pycurl.E_RECV_ERROR,
        pycurl.E_PARTIAL_FILE,
        pycurl.E_FTP_WEIRD_SERVER_REPLY,  # CURLE_WEIRD_SERVER_REPLY, 8
        pycurl.E_HTTP2,
        pycurl.E_BAD_CONTENT_ENCODING,
        pycurl.E_WRITE_ERROR,
        _HTTP2_STREAM,
        _HTTP3,
        _TOO_LARGE,
    }
)


class EngineError(RuntimeError):
    """libcurl failed for a reason of ours, not the target's (a CA bundle it cannot read, an
    error code we do not know): the probe reports internal_error, never a Meta failure."""


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
    # Whether an answer with this status is read on (its body judged or capped); when not
    # (a redirect to follow, a status that fails anyway), the exchange stops at its headers.
    wants_body: Callable[[int], bool] = lambda _status: True


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes  # empty when the body was not wanted
    http_version: str


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
        start = max(marks.request_sent, reached) if phase is Phase.PROCESSING else reached
        if end <= 0.0:
            return done, phase, start
        done[phase] = max(0.0, end - start)
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
        self.header_lines: list[bytes] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        # The headers are in and the body is not wanted: libcurl was stopped there.
        self.headers_only = False
        self.error: BaseException | None = None
        self.tls_version: str | None = None
        # When the TLS ClientHello went out, i.e. TCP had connected: libcurl stamps its
        # connect mark only once TLS is done too, so a stalled handshake would read as connect.
        self.hello_sent_at: float | None = None

    @_guarded(pycurl.SOCKET_BAD)
    def open_socket(self, _purpose: int, address: Any) -> int:
        self.policy.require(address.addr[0], "address")
        # A bare descriptor: libcurl owns it from here and closes it (a socket object would
        # be duplicated, leaving ours to close).
        return socket.socket(address.family, address.socktype, address.protocol).detach()

    @_guarded(pycurl.PREREQFUNC_ABORT)
    def before_request(self, peer: str, _local: str, _peer_port: int, _local_port: int) -> int:
        self.policy.require(peer, "address")
        if _parsed_address(peer) != _parsed_address(self.request.address):
            raise PolicyViolation(peer, "address libcurl chose (not the one pinned)")
        return pycurl.PREREQFUNC_OK

    @_guarded(-1)
    def header(self, line: bytes) -> int | None:
        if line.startswith(b"HTTP/"):  # a new answer begins (after a 1xx, say)
            self.header_lines.clear()
        self.header_lines.append(line)
        if line in (b"\r\n", b"\n") and not self._informational():
            status = int(self.header_lines[0].split()[1])
            if not self.request.wants_body(status):
                self.headers_only = True
                return -1  # stop here: libcurl aborts the transfer, the answer is complete
        return None

    def _informational(self) -> bool:
        parts = self.header_lines[0].split() if self.header_lines else []
        return len(parts) < 2 or parts[1].startswith(b"1")

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


def _pin(port: int, address: str) -> str:
    """CONNECT_TO entry: any host, any port, goes to address:port. Any, because libcurl
    matches a host name in its own (IDNA) spelling: a name spelt otherwise would not match,
    and libcurl would look it up itself. A handle has one URL, so "any" is that one."""
    target = f"[{address}]" if ":" in address else address
    return f"::{target}:{port}"


def _handle(request: Request, transfer: _Transfer, deadline_left: float) -> pycurl.Curl:
    curl = pycurl.Curl()
    setopt = curl.setopt
    setopt(pycurl.URL, request.url)
    setopt(pycurl.CONNECT_TO, [_pin(request.port, request.address)])
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
    setopt(pycurl.USERAGENT, request.user_agent)
    headers = [*request.headers, "Expect:"]
    if request.method == "HEAD":
        setopt(pycurl.NOBODY, 1)
    else:
        setopt(pycurl.MAXFILESIZE_LARGE, request.max_body_bytes)
    if request.method not in ("GET", "HEAD") or request.body is not None:
        setopt(pycurl.CUSTOMREQUEST, request.method)
        setopt(pycurl.POSTFIELDS, request.body or b"")
        if not any(h.lower().startswith("content-type:") for h in request.headers):
            headers.append("Content-Type: text/plain; charset=utf-8")  # as before, not a form
    setopt(pycurl.HTTPHEADER, headers)
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
            return _certificate_time(value)
    return None


# Both are asked of the same few values on every probe: parsed once (strptime is about
# 7 us a call, ip_address 2 us).
@functools.lru_cache(maxsize=1024)
def _certificate_time(text: str) -> float | None:
    try:
        return float(ssl.cert_time_to_seconds(text))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _parsed_address(text: str) -> IPv4Address | IPv6Address:
    return ip_address(text)


def _used_version(curl: pycurl.Curl) -> str | None:
    return _USED_VERSIONS.get(curl.getinfo(pycurl.INFO_HTTP_VERSION))


def _failure(
    code: int, message: str, curl: pycurl.Curl, request: Request, phase: Phase | None
) -> Exception:
    """What a libcurl error means for the probe, by the phase it struck in."""
    quic = request.http_version == "3"
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if request.connect_timeout is None:  # libcurl's backstop, after asyncio's deadline
            return TimeoutError(message)
        # This address's share of the time ran out (libcurl's connect covers TLS too).
        timeouts = QUIC_TIMEOUT_REASONS if quic else TIMEOUT_REASONS
        return ProbeFailure(
            timeouts[phase],
            f"{request.address} port {request.port}: no answer within its share of the time"
            f" ({request.connect_timeout:.3g}s, during {phase.value if phase else 'request'})",
        )
    if code == pycurl.E_PEER_FAILED_VERIFICATION:
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
    if phase is Phase.CONNECT and code in (_QUIC_CONNECT_ERRORS if quic else _CONNECT_ERRORS):
        errno = curl.getinfo(pycurl.OS_ERRNO)
        detail = f"connect to {request.address} port {request.port} failed: {message}"
        return ProbeFailure(_connect_reason(code, errno, quic), detail)
    if phase is Phase.TLS and code in _TLS_ERRORS:
        return ProbeFailure(
            Reason.TLS_HANDSHAKE, f"TLS handshake with {request.host} failed: {message}"
        )
    if phase in (Phase.PROCESSING, Phase.TRANSFER) and code in _ANSWER_ERRORS:
        return ProbeFailure(Reason.HTTP_PROTOCOL, f"bad HTTP answer: {message}")
    return EngineError(
        f"libcurl error {code} during {phase.value if phase else 'setup'}: {message}"
    )


def _connect_reason(code: int, errno: int, quic: bool) -> Reason:
    reason = reason_for_errno(errno) if errno else Reason.TCP_UNREACHABLE
    if not quic:
        return reason
    if reason is Reason.TCP_UNREACHABLE and errno:
        return Reason.QUIC_UNREACHABLE
    # Over UDP, an ICMP port unreachable fails the next send or receive: nothing listens
    # for QUIC there.
    if reason is Reason.TCP_REFUSED or code in _CONNECT_ERRORS:
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
    left = min(max(0.0, run.deadline - loop.time()), _LONGEST)  # a run with no deadline: inf
    curl = _handle(request, transfer, left)
    tls = request.url.startswith("https:")
    multi = _multi()
    future = multi.add_handle(curl)
    started = time.perf_counter()  # libcurl's clock starts in this loop iteration too
    finished = failed = False
    try:
        try:
            await future
            finished = True
        except pycurl.error as exc:
            failed = True
            if transfer.headers_only:  # stopped at the headers on purpose: a whole answer
                finished, failed = True, False
            elif transfer.error is not None:
                raise transfer.error from None
            else:
                code, message = exc.args[0], str(exc.args[1])
                if transfer.too_large or code == pycurl.E_FILESIZE_EXCEEDED:
                    raise ProbeFailure(
                        Reason.BODY_TOO_LARGE, f"body exceeds {request.max_body_bytes} bytes"
                    ) from None
                marks = transfer.marks(curl, started)
                _, phase, _ = split_phases(marks, tls=tls, finished=False)
                raise _failure(code, message, curl, request, phase) from None
        finally:
            if not (finished or failed):  # cancelled: the deadline
                with contextlib.suppress(RuntimeError):  # RuntimeError: already out
                    multi.remove_handle(curl)
            marks = transfer.marks(curl, started)
            done, current, since = split_phases(marks, tls=tls, finished=finished)
            # A deadline names `current`: it has run since `since`. Otherwise it ends here.
            run.clock.record(done, current, started + since)
            if finished or failed:
                run.clock.leave()
            if Phase.CONNECT in done:
                run.facts["address_family"] = family_of(request.address)
        if transfer.error is not None:  # a callback failed, yet libcurl finished
            raise transfer.error
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
        )
    finally:
        curl.close()


__all__ = ["HTTP_VERSIONS", "Answer", "Marks", "Request", "exchange", "split_phases"]
