"""The sim node's `tcp` entries: a port that accepts and then says nothing, or refuses, or hangs.

WhatsApp's chat port, seen from outside; the node's control API switches its mode.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Literal, get_args

from exporter.sim.control import NodeError
from exporter.sim.nodespec import ListenAddr, TcpSpec

__all__ = ["TCP_MODES", "TcpMode", "TcpSink"]

HANG_FILL_TIMEOUT = 2.0
READ_CHUNK = 4096

TcpMode = Literal["accept", "refuse", "hang"]
TCP_MODES: tuple[str, ...] = get_args(TcpMode)


def _bind_error(what: str, addr: ListenAddr, exc: OSError) -> NodeError:
    # asyncio rewords bind errors ("error while attempting to bind ..."); the errno is plainer.
    reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    return NodeError(f"{what}: cannot listen on {addr}: {reason}")


class TcpSink:
    """Listeners for one `tcp` entry, switchable between three modes.

    accept: connections are accepted and held silently (up to `hold_seconds`, at most
    `max_connections` at once; above that they are closed at once). refuse: no listener,
    so the kernel answers SYNs with RST. hang: a listener with a full accept queue (backlog
    0, filled by one connection of our own) that never accepts, so the kernel drops SYNs and
    connects time out — no packet filter needed.
    """

    def __init__(self, spec: TcpSpec) -> None:
        self.spec = spec
        self.mode: TcpMode = "refuse"
        self.accepts = 0
        self.rejected = 0
        self._bound = list(spec.listen)
        self._servers: list[asyncio.Server] = []
        self._hang_sockets: list[socket.socket] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def listen(self) -> list[ListenAddr]:
        return list(self._bound)

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def set_mode(self, mode: TcpMode) -> None:
        if mode == self.mode:
            return
        await self.close()
        if mode == "accept":
            await self._open_accepting()
        elif mode == "hang":
            await self._open_hanging()
        self.mode = mode

    async def close(self) -> None:
        """Stop listening and reset every held connection."""
        self.mode = "refuse"
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for sock in self._hang_sockets:
            sock.close()
        self._hang_sockets.clear()
        for writer in list(self._writers):
            writer.transport.abort()  # RST: the "server went away" a client would see
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    async def _open_accepting(self) -> None:
        for i, addr in enumerate(self._bound):
            try:
                server = await asyncio.start_server(self._hold, addr.host, addr.port)
            except OSError as exc:
                await self.close()
                raise _bind_error(f"tcp {self.spec.name!r}", addr, exc) from exc
            self._servers.append(server)
            # Keep the port the kernel chose, so "accept" after "refuse" reopens the same one.
            self._bound[i] = ListenAddr(addr.host, server.sockets[0].getsockname()[1])

    async def _open_hanging(self) -> None:
        for addr in self._bound:
            try:
                await self._open_hanging_one(addr)
            except OSError as exc:
                await self.close()
                raise _bind_error(f"tcp {self.spec.name!r} (hang)", addr, exc) from exc

    async def _open_hanging_one(self, addr: ListenAddr) -> None:
        family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        self._hang_sockets.append(listener)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setblocking(False)
        listener.bind((addr.host, addr.port))
        listener.listen(0)  # accept queue of one: our own connection below fills it
        filler = socket.socket(family, socket.SOCK_STREAM)
        self._hang_sockets.append(filler)
        filler.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(HANG_FILL_TIMEOUT):
            await loop.sock_connect(filler, listener.getsockname()[:2])

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._tasks) >= self.spec.max_connections:
            self.rejected += 1
            writer.transport.abort()
            return
        self.accepts += 1
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            async with asyncio.timeout(self.spec.hold_seconds):
                while await reader.read(READ_CHUNK):  # whatever the client says is dropped
                    pass
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    def reset_counts(self) -> None:
        self.accepts = self.rejected = 0
