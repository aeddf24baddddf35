"""The control server every sim process runs (the node, the feeds): a JSON API on a UNIX socket.

A UNIX socket crosses network namespaces, so the lab steers every process from outside them.
JSON in and out; a bad request is 400 `{"error": "FIELD: problem", "field": ...}` (ControlError),
a request that cannot be carried out 409 `{"error": ...}` (NodeError). A process refuses to
start on a socket another live process listens on, and removes a stale one left by a crash.
"""

from __future__ import annotations

import logging
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["ControlError", "ControlServer", "NodeError", "json_errors", "read_body"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0


class NodeError(RuntimeError):
    """The node cannot start, or cannot carry out a control request."""


class ControlError(ValueError):
    """A control request names a bad `field`."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


async def read_body(request: web.Request, required: set[str], optional: set[str]) -> dict[str, Any]:
    try:
        doc = await request.json()
    except ValueError as exc:
        raise ControlError("body", f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ControlError("body", "must be a JSON object")
    missing = sorted(required - set(doc))
    if missing:
        raise ControlError(missing[0], "is required")
    unknown = sorted(set(doc) - required - optional)
    if unknown:
        raise ControlError(unknown[0], "unknown field")
    return doc


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as exc:
        return web.json_response({"error": str(exc), "field": exc.field}, status=400)
    except NodeError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)


def _claim_socket_path(path: Path) -> None:
    """Refuse a path a live node listens on; remove a stale socket file left by a crash."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise NodeError(f"control_socket: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)  # a live node with a full backlog counts as live
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise NodeError(f"control_socket: another process is listening on {path}")


class ControlServer:
    """The control API on a UNIX socket (which crosses network namespaces)."""

    def __init__(self, app: web.Application, path: Path) -> None:
        self.path = path
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        self._started = False

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _claim_socket_path(self.path)
        await self._runner.setup()
        try:
            await web.UnixSite(self._runner, str(self.path)).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise NodeError(f"control_socket: cannot listen on {self.path}: {exc}") from exc
        self._started = True
        log.info("sim: control API on %s", self.path)

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._runner.cleanup()
        self.path.unlink(missing_ok=True)  # Python 3.11's unix server leaves the file behind
