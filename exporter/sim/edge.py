"""Meta's edge for HTTP/2 and HTTP/3 in the simulator.

Hypercorn terminates HTTP/2 (TLS with ALPN, TCP) and HTTP/3 (QUIC, UDP) on one port and
forwards every request to the simulated front end (frontend.py) over HTTP/1.1, as a CDN edge
forwards to its origin. So every fault set on the front end's state shows on every protocol,
and its request counts count them all. Two things are the edge's own:
- an origin that hangs up before answering becomes a 502 (no h2/h3 client ever sees the
  hang-up itself);
- `quic_delay` holds every QUIC datagram the edge receives, to play a slow QUIC path and
  handshake (there is no netem on these machines); `quic_silent` drops them all, to play a
  QUIC edge that is down while TCP answers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import hypercorn.protocol.quic
from aioquic.quic.events import QuicEvent, StopSendingReceived, StreamReset
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h3 import H3Protocol
from hypercorn.utils import wrap_app

from .certs import LabCA

# aioquic logs every QUIC connection's events at INFO on "quic" (thousands of lines a minute
# under probing), which would drown the simulator's and the demo's own log.
logging.getLogger("quic").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


class _H3ThatOutlivesItsClients(H3Protocol):
    """hypercorn's HTTP/3 (0.18), minus one flaw: it ignores a client's RESET_STREAM and
    STOP_SENDING, so the answer to a request whose client gave up (a probe's deadline) raises
    in aioquic ("Cannot send data after the stream was reset"), in a task of the QUIC
    listener's task group, which takes the whole listener down: every later HTTP/3 handshake
    on that edge times out. Under load in the lab that read as Meta "degraded at quic" for the
    rest of the run. Here a client that leaves costs only its own stream, as on a real edge."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._left: set[int] = set()  # streams whose client reset them or stopped reading

    async def handle(self, quic_event: QuicEvent) -> None:
        if isinstance(quic_event, StreamReset | StopSendingReceived):
            self._left.add(quic_event.stream_id)
            stream = self.streams.get(quic_event.stream_id)
            if stream is not None:  # the app hears http.disconnect; nothing more is sent
                await stream.handle(StreamClosed(stream_id=quic_event.stream_id))
        await super().handle(quic_event)

    async def stream_send(self, event: StreamEvent) -> None:
        if event.stream_id not in self._left:
            try:
                await super().stream_send(event)
                return
            except RuntimeError:  # reset before its event reached handle(): the same case
                self._left.add(event.stream_id)
        if isinstance(event, StreamClosed):
            self.streams.pop(event.stream_id, None)
            self._left.discard(event.stream_id)


# hypercorn's QUIC protocol builds its HTTP/3 protocol by this module-level name. Only the
# simulator's edges (sim node, demo, bench) run hypercorn in our processes.
hypercorn.protocol.quic.H3Protocol = _H3ThatOutlivesItsClients  # type: ignore[misc]

# Headers that belong to one hop, never forwarded (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
    }
)


class _Origin(aiohttp.abc.AbstractResolver):
    """Every host name resolves to the front end's own address: the edge's only origin."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        return [
            aiohttp.abc.ResolveResult(
                hostname=host,
                host=self._host,
                port=self._port,
                family=family,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def _request_headers(scope: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """(Host, the headers to forward) from an ASGI scope of any HTTP version."""
    host, headers = "", []
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.lower(), raw_value.decode("latin-1")
        if name in (b"host", b":authority"):
            host = host or value
        elif not name.startswith(b":") and name not in _HOP_BY_HOP:
            headers.append((name.decode("latin-1"), value))
    return host, [("Host", host), *headers]


async def answered_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """ASGI's lifespan protocol, acknowledged (nothing to start or stop): True when `scope`
    was a lifespan one and is done with, False for any other scope."""
    if scope["type"] != "lifespan":
        return False
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})
    return True


class _ForwardingApp:
    """The ASGI app: one upstream HTTP/1.1 request per request, its answer streamed back."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if await answered_lifespan(scope, receive, send) or scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        host, headers = _request_headers(scope)
        target = scope["raw_path"].decode("latin-1") or "/"
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            async with self._session.request(
                scope["method"],
                f"https://{host or 'origin'}{target}",
                headers=headers,
                data=bytes(body) or None,
                allow_redirects=False,
                auto_decompress=False,
            ) as answer:
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status,
                        "headers": [
                            (name.lower(), value)
                            for name, value in answer.raw_headers
                            if name.lower() not in _HOP_BY_HOP
                        ],
                    }
                )
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except aiohttp.ServerDisconnectedError:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"origin hung up"})


# Datagrams hypercorn may hold for its QUIC loop. Its own 10 drops the rest of a burst (a lab
# on two loaded cores stalls its loop, then reads the kernel's backlog at once), and each
# dropped handshake packet costs the client a retransmit timeout: with three busy loops, 40
# handshakes at once took up to 3.2 s with 10, 1.8 s with this. Meta's edge drops nothing at
# ten packets.
QUIC_BACKLOG = 1024


class _DelayedDatagrams:
    """Wraps hypercorn's UDP protocol: every datagram in is held `delay()` seconds first
    (None: dropped). Not a DatagramProtocol subclass, so every other callback reaches the
    wrapped one."""

    def __init__(self, inner: asyncio.DatagramProtocol, delay: Any) -> None:
        self._inner, self._delay = inner, delay
        if hasattr(inner, "protocol_queue"):  # hypercorn's UDPServer, before it runs
            inner.protocol_queue = asyncio.Queue(QUIC_BACKLOG)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def run(self) -> None:
        """hypercorn's listener loop: should it ever die, say so (it would otherwise be
        silent until shutdown, every later HTTP/3 handshake timing out)."""
        try:
            await self._inner.run()
        except Exception:
            log.exception("the QUIC listener stopped: HTTP/3 on this edge no longer answers")
            raise

    def datagram_received(self, data: bytes, addr: Any) -> None:
        delay = self._delay()
        if delay is None:
            return
        if delay <= 0:
            self._inner.datagram_received(data, addr)
        else:
            asyncio.get_running_loop().call_later(delay, self._inner.datagram_received, data, addr)


def _bound_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A TCP and a UDP socket bound to the same host and port (0: a free one for both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        # IPPROTO_TCP spelt out: asyncio sets TCP_NODELAY only on sockets that say so, and
        # accepted ones inherit it. With proto 0, Nagle held each answer's body until the
        # client's delayed ACK: 40 ms after its headers, which no real edge does.
        tcp = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for sock in (tcp, udp):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
            udp.bind((host, tcp.getsockname()[1]))
        except OSError:
            tcp.close()
            udp.close()
            if port:
                raise
            continue
        for sock in (tcp, udp):
            sock.setblocking(False)
        return tcp, udp
    raise OSError(f"no port free for both TCP and UDP on {host}")


def _bound_udp(host: str, port: int) -> socket.socket:
    udp = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind((host, port))
    except OSError:
        udp.close()
        raise
    udp.setblocking(False)
    return udp


class EdgeServer:
    """h2 and h3 on host:port, forwarding to the front end at origin_host:origin_port.

    `async with EdgeServer(ca, hostnames, "127.0.0.1", frontend.port) as edge:` then
    `edge.port`. The edge's certificate, from the lab CA, names every host in `hostnames`.
    """

    def __init__(
        self,
        ca: LabCA,
        hostnames: Iterable[str],
        origin_host: str,
        origin_port: int,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app: Any = None,
        tcp: bool = True,
    ) -> None:
        self._ca, self._hostnames = ca, list(hostnames)
        # False: HTTP/3 only, on UDP host:port, beside a front end that holds TCP host:port
        # itself (the lab's: one address serves TCP and QUIC, as Meta's edge does).
        self._tcp = tcp
        # An ASGI app to serve instead of forwarding to the front end (bench/servers.py).
        self._app = app
        self._origin = (origin_host, origin_port)
        self.host, self._requested_port = host, port
        self.port = 0
        # Seconds each incoming QUIC datagram is held: a slow QUIC path, whose handshake
        # round trips each wait that long.
        self.quic_delay = 0.0
        # True: every QUIC datagram in is dropped (silence: QUIC probes time out).
        self.quic_silent = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._certs: tempfile.TemporaryDirectory[str] | None = None
        self._udp_transport: asyncio.BaseTransport | None = None

    def _config(self) -> Config:
        self._certs = tempfile.TemporaryDirectory(prefix="sim-edge-")
        leaf = self._ca.issue(self._hostnames)
        certfile, keyfile = Path(self._certs.name, "cert.pem"), Path(self._certs.name, "key.pem")
        leaf.private_key_pem.write_to_path(str(keyfile))
        certfile.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        config = Config()
        config.certfile, config.keyfile = str(certfile), str(keyfile)
        config.alpn_protocols = ["h2", "http/1.1"]
        config.graceful_timeout = 1.0
        config.include_server_header = False
        config.accesslog = None
        config.errorlog = None  # its lines go to the 'hypercorn.error' logger only
        return config

    def _datagram_delay(self) -> float | None:
        return None if self.quic_silent else self.quic_delay

    async def start(self) -> int:
        """Bind, then serve; on any failure everything started is undone before it raises."""
        if self._task is not None:
            raise RuntimeError("edge already started")
        if self._tcp:
            tcp, udp = _bound_pair(self.host, self._requested_port)
            streams = [tcp]
        else:
            udp = _bound_udp(self.host, self._requested_port)
            streams = []
        self.port = udp.getsockname()[1]
        try:
            await self._serve(streams, udp)
        except BaseException:
            await self.close()
            if self._udp_transport is None:  # no transport took the socket over
                udp.close()
            for sock in streams:
                sock.close()
            raise
        return self.port

    async def _serve(self, streams: list[socket.socket], udp: socket.socket) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=_Origin(*self._origin), ssl=False, use_dns_cache=False
            ),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        config = self._config()
        app = wrap_app(
            self._app or _ForwardingApp(self._session), config.wsgi_max_body_size, "asgi"
        )
        loop = asyncio.get_running_loop()
        original = loop.create_datagram_endpoint
        quic_ready = asyncio.Event()

        async def delayed_endpoint(factory: Any, **kwargs: Any) -> Any:
            if kwargs.get("sock") is not udp:  # someone else's endpoint on this loop
                return await original(factory, **kwargs)
            endpoint = await original(
                lambda: _DelayedDatagrams(factory(), self._datagram_delay), **kwargs
            )
            self._udp_transport = endpoint[0]  # hypercorn leaves it open at shutdown
            quic_ready.set()  # hypercorn opens it last, after the TCP listener
            return endpoint

        # hypercorn opens its UDP endpoint on the running loop: wrap that one call.
        loop.create_datagram_endpoint = delayed_endpoint  # type: ignore[method-assign]
        try:
            self._task = asyncio.create_task(
                worker_serve(
                    app,
                    config,
                    sockets=Sockets(streams, [], [udp]),
                    shutdown_trigger=self._stop.wait,
                )
            )
            ready = asyncio.create_task(quic_ready.wait())
            await asyncio.wait({ready, self._task}, timeout=10, return_when="FIRST_COMPLETED")
            ready.cancel()
            if self._task.done():
                self._task.result()  # hypercorn failed to start: its error
            if not quic_ready.is_set():
                raise RuntimeError(f"edge on {self.host}:{self.port} did not start in 10 s")
        finally:
            del loop.create_datagram_endpoint

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:  # hypercorn will not stop: cancel it
                task.cancel()
                await asyncio.wait({task})
            elif not task.cancelled():
                task.exception()  # a failed start: start() already raised its error
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._certs is not None:
            self._certs.cleanup()
            self._certs = None

    async def __aenter__(self) -> EdgeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


__all__ = ["EdgeServer"]
