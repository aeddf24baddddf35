"""The floor under an HTTPS probe: the same exchange as the exporters', with nothing around it.

    python -m bench.floor --engine ssl  --kind https --url https://www.bench.lab:P/d/0 \
        --dns H:53 --ca-file F --rate 50 --seconds 20 --record OUT.json
    python -m bench.floor --engine curl --kind h2 ...

One blocking loop, one probe after another at a steady rate: an A lookup (a hand-built query
on a fresh UDP socket, as both exporters ask one per probe), a fresh TCP connection, a full
TLS handshake verified against the lab CA, GET, the whole body. No scheduler, no metrics, no
event loop: what is left is the TLS library and the kernel (and, but for `openssl`, the
Python of the loop itself).

- `openssl`: the same loop in C (bench/floor_openssl.c), built here with the system's C
  compiler against the OpenSSL the pycurl wheel bundles: the floor of libcurl's own TLS
  library with nothing around it, so the lowest any client of it can cost.
- `ssl`: Python's `ssl` (the system's OpenSSL, the CA store parsed once) and a hand-written
  HTTP/1.1 GET: the floor issue 15 names.
- `curl`: libcurl through pycurl, blocking, with the options our engine sets for a fresh
  exchange (FRESH_CONNECT, FORBID_REUSE, no session cache, CONNECT_TO, CERTINFO): the floor
  of our engine's library, so ours minus this is the exporter's own work.

Each probe's start time is recorded; the record is written when the loop ends or on SIGTERM.
A failed probe is counted, not retried.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENGINES = ("openssl", "ssl", "curl")
# The kinds each engine can do: the openssl and ssl floors speak HTTP/1.1 only.
ENGINE_KINDS = {"openssl": ("https",), "ssl": ("https",), "curl": ("https", "h2", "h3")}
OPENSSL_SOURCE = Path(__file__).with_name("floor_openssl.c")
# The bench kind -> our engine's `http_version` (exporter.probes.curl.HTTP_VERSIONS).
HTTP_VERSION_OF_KIND = {"https": "1.1", "h2": "2", "h3": "3"}
TIMEOUT = 5.0


def a_query(name: str, query_id: int) -> bytes:
    """A DNS query for the A records of `name`, recursion desired (pure)."""
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split("."))
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"


def first_a(answer: bytes, query_id: int) -> str:
    """The first A record's address in an answer to query `query_id` (pure). Raises
    ValueError for another query's answer, an error rcode, or no A record."""
    if len(answer) < 12:
        raise ValueError("short answer")
    got_id, flags, questions, records = struct.unpack("!HHHH", answer[:8])
    if got_id != query_id or not flags & 0x8000:
        raise ValueError("not an answer to this query")
    if flags & 0xF:
        raise ValueError(f"rcode {flags & 0xF}")
    at = 12
    for _ in range(questions):
        at = _skip_name(answer, at) + 4
    for _ in range(records):
        at = _skip_name(answer, at)
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", answer[at : at + 10])
        at += 10
        if rtype == 1 and length == 4:
            return socket.inet_ntoa(answer[at : at + 4])
        at += length
    raise ValueError("no A record")


def _skip_name(wire: bytes, at: int) -> int:
    while True:
        length = wire[at]
        if length == 0:
            return at + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return at + 2
        at += 1 + length


def lookup(server: tuple[str, int], name: str) -> str:
    query_id = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(server)
        sock.send(a_query(name, query_id))
        return first_a(sock.recv(4096), query_id)


def ssl_exchange(context: ssl.SSLContext, url: str) -> Callable[[str], None]:
    parts = urlsplit(url)
    request = (
        f"GET {request_target(url)} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    )

    def exchange(address: str) -> None:
        answer = bytearray()
        raw = socket.create_connection((address, parts.port), timeout=TIMEOUT)
        # As libcurl and Go do: else the request waits behind the Finished for a delayed ACK.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with (
            raw,
            context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            tls.sendall(request.encode())
            # Up to the end of the body, as a client does: not until the server hangs up.
            while not complete(answer) and (chunk := tls.recv(65536)):
                answer += chunk
        if not answer.startswith(b"HTTP/1.1 2") or not complete(answer):
            raise ValueError(f"answer {bytes(answer[:40])!r} ({len(answer)} bytes)")

    return exchange


def request_target(url: str) -> str:
    """What an HTTP/1.1 request line asks for: the path and the query (pure)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def complete(answer: bytes | bytearray) -> bool:
    """Whether an HTTP/1.1 answer with a Content-Length has all its body (pure)."""
    head, sep, body = bytes(answer).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    raise ValueError("no Content-Length")  # the bench server always sends one


def curl_exchange(kind: str, url: str, ca_file: str) -> Callable[[str], None]:
    import pycurl  # only this engine needs it

    from exporter.probes.curl import HTTP_VERSIONS

    parts = urlsplit(url)
    curl = pycurl.Curl()  # one handle: its own multi keeps the parsed CA store, as ours does
    body = bytearray()

    def exchange(address: str) -> None:
        body.clear()
        curl.reset()
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.CONNECT_TO, [f"{parts.hostname}:{parts.port}:{address}:{parts.port}"])
        curl.setopt(pycurl.HTTP_VERSION, HTTP_VERSIONS[HTTP_VERSION_OF_KIND[kind]])
        curl.setopt(pycurl.CAINFO, ca_file)
        curl.setopt(pycurl.FRESH_CONNECT, 1)
        curl.setopt(pycurl.FORBID_REUSE, 1)
        curl.setopt(pycurl.SSL_SESSIONID_CACHE, 0)
        curl.setopt(pycurl.OPT_CERTINFO, 1)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.TIMEOUT_MS, int(TIMEOUT * 1000))
        curl.setopt(pycurl.WRITEFUNCTION, body.extend)
        curl.perform()
        curl.getinfo(pycurl.INFO_CERTINFO)  # our engine reads the chain for the expiry
        status = curl.getinfo(pycurl.RESPONSE_CODE)
        if not 200 <= status < 300:
            raise ValueError(f"status {status}")

    return exchange


def openssl_floor() -> Path:
    """bench/floor_openssl.c built against the pycurl wheel's own libssl and libcrypto (the
    system's OpenSSL headers: the 3.x ABI is stable), once per source, library and compiler
    command. The binary is cached in a directory only this user can write (it is executed,
    as root under `make bench`: never from a shared /tmp). Raises RuntimeError naming what
    is missing or wrong."""
    import pycurl  # only to find the wheel's libraries

    libs = Path(pycurl.__file__).resolve().parents[1] / "pycurl.libs"
    found = {lib: sorted(libs.glob(f"{lib}-*.so*")) for lib in ("libssl", "libcrypto")}
    if not all(found.values()):
        raise RuntimeError(f"no libssl or libcrypto in {libs}: pycurl is not the PyPI wheel")
    flags = [
        "-O2", "-D_GNU_SOURCE", "-Wall", "-Werror", str(OPENSSL_SOURCE), f"-L{libs}",
        f"-l:{found['libssl'][0].name}", f"-l:{found['libcrypto'][0].name}", f"-Wl,-rpath,{libs}",
    ]  # fmt: skip
    key = hashlib.sha256(OPENSSL_SOURCE.read_bytes() + "\0".join(flags).encode()).hexdigest()
    cache = _private_dir(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meta-outage-exporter"
    )
    binary = cache / f"floor-openssl-{key[:16]}"
    if binary.exists():
        _require_private(binary)
        return binary
    handle, partial = tempfile.mkstemp(dir=cache, prefix=f"{binary.name}.")
    os.close(handle)
    try:
        try:
            built = subprocess.run(
                ["cc", "-o", partial, *flags], capture_output=True, text=True, timeout=120
            )
        except FileNotFoundError:
            raise RuntimeError("no C compiler (cc): install gcc and libssl-dev") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"building {OPENSSL_SOURCE.name} took over 120 s") from None
        if built.returncode != 0:
            hint = " (install libssl-dev)" if "openssl/" in built.stderr else ""
            raise RuntimeError(f"building {OPENSSL_SOURCE.name} failed{hint}: {built.stderr}")
        os.chmod(partial, 0o700)
        os.replace(partial, binary)  # atomic: a concurrent build or reader never sees half
    finally:
        Path(partial).unlink(missing_ok=True)  # a failed build's; gone once it is the binary
    return binary


def _private_dir(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _require_private(directory)
    return directory


def _require_private(path: Path) -> None:
    """Refuse a file or directory another user owns or may write: we execute from it."""
    status = path.stat()
    if status.st_uid != os.geteuid() or status.st_mode & 0o022:
        raise RuntimeError(f"{path} is not private to this user (owner or mode): not running it")


def run(
    exchange: Callable[[str], None],
    dns: tuple[str, int],
    name: str,
    rate: float,
    seconds: float,
    record: dict[str, Any],
) -> None:
    """Probe at `rate` per second for `seconds`: on schedule, never catching up in a burst."""
    step = 1.0 / rate
    ends = time.monotonic() + seconds
    due = time.monotonic()
    while due < ends:
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        record["started_at"].append(time.time())
        try:
            exchange(lookup(dns, name))
        except Exception as exc:  # OSError, ssl, pycurl.error, a bad answer: counted, not fatal
            record["failed"] += 1
            record["last_error"] = repr(exc)
        due = max(due + step, time.monotonic() - step)  # late: skip, do not bunch up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--kind", choices=("https", "h2", "h3"), default="https")
    parser.add_argument("--url", required=True, help="what to GET (bench.workload.https_url)")
    parser.add_argument("--dns", required=True, help="host:port of the bench DNS server")
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--rate", type=float, required=True, help="probes per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.kind not in ENGINE_KINDS[args.engine]:
        parser.error(f"engine {args.engine} cannot probe {args.kind}")
    host, _, port = args.dns.rpartition(":")
    parts = urlsplit(args.url)
    name = parts.hostname or ""
    if args.engine == "openssl":  # the process becomes the C loop: no Python left in it
        binary = str(openssl_floor())
        argv_c = [binary, host, port, name, str(parts.port), request_target(args.url)]
        os.execv(
            binary, [*argv_c, args.ca_file, str(args.rate), str(args.seconds), str(args.record)]
        )
    if args.engine == "ssl":
        context = ssl.create_default_context(cafile=args.ca_file)
        exchange = ssl_exchange(context, args.url)
    else:
        exchange = curl_exchange(args.kind, args.url, args.ca_file)
    record: dict[str, Any] = {"started_at": [], "failed": 0, "last_error": None}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwinds to the write below
    try:
        run(exchange, (host, int(port)), name, args.rate, args.seconds, record)
    except KeyboardInterrupt:
        pass
    finally:
        args.record.write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
