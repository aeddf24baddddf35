"""Targets for the benchmarks: HTTPS that answers after a delay named in the path, a TCP
listener, and DNS, each role in its own process so its CPU is measured apart.

    python -m bench.servers --role https --listen 127.0.0.1:0 --ca-dir DIR --stats FILE
    python -m bench.servers --role dns --listen 127.77.0.53:53 --stats FILE
    python -m bench.servers --role edge --listen 127.0.0.1:0 --ca-dir DIR --stats FILE

Prints one JSON line {"port": N} once listening; stops on SIGTERM and then writes its
figures (requests served, how late the delay timers fired) to --stats.

Lean on purpose, unlike exporter.sim's front end: a benchmark measures the clients, so the
server must be neither the bottleneck nor a source of timing error. The HTTPS role is a
bare asyncio protocol: no framework, a delay is one loop timer (no polling), `GET /d/50`
answers after 50 ms, anything else at once, always with `Connection: close` (both
exporters open a fresh connection per probe anyway). It runs on uvloop when installed. The
edge role answers the same way over HTTP/2 (TLS, ALPN h2) and HTTP/3 (QUIC, the same port
over UDP): hypercorn, as the simulator's edge (exporter/sim/edge.py), with a bare ASGI app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from exporter.sim.certs import LabCA
from exporter.sim.dnsserver import DnsServer, Zone
from exporter.sim.edge import EdgeServer, answered_lifespan

BENCH_HOST = "www.bench.lab"
BENCH_ZONE = "bench.lab"
BODY = b"<!DOCTYPE html><html><head><title>bench</title></head><body>" + b"x" * 900 + b"</body>"
MAX_HEAD = 16 * 1024  # a request head larger than this is not from our clients: hang up
MAX_DELAY_MS = 10_000
LATENESS_KEPT = 200_000  # timer lateness samples kept for the stats (bounded memory)


def response(body: bytes = BODY) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


RESPONSE = response()


def delay_of(request_line: bytes) -> float:
    """Seconds to wait before answering: `GET /d/<ms>[?...] HTTP/1.1` -> ms / 1000 (pure)."""
    parts = request_line.split(b" ")
    path = parts[1] if len(parts) >= 2 else b"/"
    if not path.startswith(b"/d/"):
        return 0.0
    digits = path[3:].split(b"?", 1)[0].split(b"/", 1)[0]
    if not digits.isdigit():
        return 0.0
    return min(int(digits), MAX_DELAY_MS) / 1000


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.lateness: list[float] = []

    def late(self, seconds: float) -> None:
        if len(self.lateness) < LATENESS_KEPT:
            self.lateness.append(seconds)

    def to_json(self) -> dict[str, object]:
        late = sorted(self.lateness)

        def pct(q: float) -> float | None:
            return late[min(len(late) - 1, int(q * len(late)))] if late else None

        return {
            "requests": self.requests,
            "connections": self.connections,
            "timer_lateness_p50": pct(0.5),
            "timer_lateness_p99": pct(0.99),
            "timer_lateness_max": late[-1] if late else None,
        }


class HttpsOnce(asyncio.Protocol):
    """One request per connection: read the head, wait the delay, answer, close."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        if self.answered or self.transport is None:
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                self.transport.close()
            return
        self.answered = True
        self.stats.requests += 1
        delay = delay_of(self.buffer.split(b"\r\n", 1)[0])
        if delay <= 0:
            self.answer()
            return
        # Lateness is timed on the monotonic clock: uvloop's loop.time() is cached per
        # loop iteration and in whole milliseconds.
        asyncio.get_running_loop().call_later(delay, self.answer_at, time.monotonic() + delay)

    def answer_at(self, due: float) -> None:
        self.stats.late(time.monotonic() - due)
        self.answer()

    def answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)
            self.transport.close()


class BenchApp:
    """The edge role's ASGI app: the HTTPS role's answer, after the same delay."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if await answered_lifespan(scope, receive, send) or scope["type"] != "http":
            return
        self.stats.requests += 1
        self.stats.connections += 1  # one request per connection from both clients
        delay = delay_of(b"GET " + scope["raw_path"] + b" HTTP/1.1")
        if delay > 0:
            due = time.monotonic() + delay
            await asyncio.sleep(delay)
            self.stats.late(time.monotonic() - due)
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"%d" % len(BODY)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


class AcceptAndClose(asyncio.Protocol):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stats.connections += 1
        transport.close()


def lab_ca(ca_dir: Path) -> LabCA:
    """The lab root saved in ca_dir, made and saved there first if absent."""
    if LabCA.is_saved_in(ca_dir):
        return LabCA.load(ca_dir)
    ca = LabCA()
    ca.save(ca_dir)
    return ca


def server_context(ca_dir: Path) -> ssl.SSLContext:
    """A leaf for www.bench.lab and 127.0.0.1 from the lab root saved in ca_dir."""
    context = lab_ca(ca_dir).context_for([BENCH_HOST, "127.0.0.1"])
    context.num_tickets = 0  # no session tickets: neither client resumes sessions
    return context


def bench_zone(address: str) -> Zone:
    return Zone.from_records(
        BENCH_ZONE,
        {
            "@": [("SOA", 3600, f"ns.{BENCH_ZONE}. admin.{BENCH_ZONE}. 1 7200 1800 604800 60")],
            "www": [("A", 60, address)],
        },
    )


async def serve(args: argparse.Namespace) -> int:
    host, _, port_text = args.listen.rpartition(":")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = Stats()
    closer = None
    if args.role == "dns":
        dns = DnsServer(bench_zone(args.answer), host=host, port=int(port_text))
        await dns.start()
        port, closer = dns.port, dns.close
    elif args.role == "edge":
        edge = EdgeServer(
            lab_ca(Path(args.ca_dir)),
            [BENCH_HOST, "127.0.0.1"],
            "",
            0,
            host,
            int(port_text),
            app=BenchApp(stats),
        )
        port, closer = await edge.start(), edge.close
    else:
        context = server_context(Path(args.ca_dir)) if args.role == "https" else None
        protocol = HttpsOnce if args.role == "https" else AcceptAndClose
        server = await loop.create_server(
            lambda: protocol(stats),
            host,
            int(port_text),
            ssl=context,
            backlog=4096,
            reuse_address=True,
        )
        port = server.sockets[0].getsockname()[1]

        async def closer() -> None:
            server.close()

    print(json.dumps({"port": port}), flush=True)
    await stop.wait()
    await closer()
    if args.role == "dns":
        stats.requests = dns.queries
    if args.stats:
        Path(args.stats).write_text(json.dumps(stats.to_json()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("--role", choices=["https", "edge", "tcp", "dns"], required=True)
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--ca-dir", help="https: directory holding the lab root (made if absent)")
    parser.add_argument("--answer", default="127.0.0.1", help=f"dns: the address of {BENCH_HOST}")
    parser.add_argument("--stats", help="write the figures here on exit")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if args.role in ("https", "edge") and not args.ca_dir:
        parser.error(f"--role {args.role} needs --ca-dir")
    runner = asyncio.run
    # The edge wraps one method of its event loop (EdgeServer.start): asyncio's, not uvloop's.
    if not args.no_uvloop and args.role != "edge":
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    return runner(serve(args))


if __name__ == "__main__":
    sys.exit(main())
