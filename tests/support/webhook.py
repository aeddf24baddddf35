"""A webhook receiver on loopback that records what Alertmanager (or anything else) posts.

Alertmanager's webhook integration POSTs one JSON document per notification (version "4":
receiver, status, groupLabels, commonLabels, alerts, ...). This server accepts a POST on any
path, answers 200, and keeps every document with its path and arrival time, so a test can
point several receivers at one server (one path each) and assert what arrived, where, and
when::

    async with WebhookReceiver() as hook:
        url = hook.url("/pager")                  # http://127.0.0.1:<port>/pager
        ...                                       # configure and trigger Alertmanager
        [page] = await hook.wait_for(1, timeout=10, receiver="pager")
        assert page.alertnames == ["MetaServiceDown"]
        assert page.received_at - sent_at < 8     # both from time.monotonic()

It listens on 127.0.0.1 only, on a port the kernel picks (port 0) unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["Notification", "WebhookReceiver"]


@dataclass(frozen=True)
class Notification:
    """One POSTed JSON document, as received."""

    path: str
    """The request path, e.g. ``/pager``."""
    payload: dict[str, Any]
    """The decoded JSON body."""
    received_at: float
    """Arrival time on the :func:`time.monotonic` clock (for durations)."""
    received_wall: float
    """Arrival time on the :func:`time.time` clock (for comparing with timestamps)."""

    # Views of Alertmanager's webhook payload (empty values if a field is absent).

    @property
    def receiver(self) -> str:
        """Alertmanager's receiver name (``receiver`` field)."""
        return str(self.payload.get("receiver", ""))

    @property
    def status(self) -> str:
        """``firing`` or ``resolved``."""
        return str(self.payload.get("status", ""))

    @property
    def group_labels(self) -> dict[str, str]:
        """The labels the notification's group is keyed on (the route's ``group_by``)."""
        return dict(self.payload.get("groupLabels") or {})

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts in the notification (each with ``status``, ``labels``, ...)."""
        return list(self.payload.get("alerts") or [])

    @property
    def alert_labels(self) -> list[dict[str, str]]:
        """The label sets of the alerts, in the payload's order."""
        return [dict(alert.get("labels") or {}) for alert in self.alerts]

    @property
    def alertnames(self) -> list[str]:
        """The ``alertname`` of each alert, in the payload's order."""
        return [labels.get("alertname", "") for labels in self.alert_labels]


class WebhookReceiver:
    """An aiohttp server on loopback recording every JSON POST as a :class:`Notification`.

    Use it as an async context manager, or call :meth:`start` and :meth:`close`.
    A body that is not a JSON object is answered 400 and kept in :attr:`malformed`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._notifications: list[Notification] = []
        self._changed = asyncio.Condition()
        self.malformed: list[bytes] = []
        """Raw bodies that were not a JSON object (answered 400, not recorded)."""

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; :attr:`port` and :meth:`url` are valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("WebhookReceiver already started")
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        # A short shutdown timeout: close() must not wait for a sender's idle keep-alive.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def close(self) -> None:
        """Stop serving (idempotent). The recorded notifications stay readable."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError("WebhookReceiver not started")
        return self._port

    def url(self, path: str = "/") -> str:
        """The URL of ``path`` on this server, e.g. ``url("/pager")``."""
        if not path.startswith("/"):
            path = "/" + path
        return f"http://{self._host}:{self.port}{path}"

    # -- what arrived ---------------------------------------------------------------------

    @property
    def notifications(self) -> list[Notification]:
        """Everything received so far, in arrival order (a copy)."""
        return list(self._notifications)

    def received(
        self,
        *,
        receiver: str | None = None,
        path: str | None = None,
        predicate: Callable[[Notification], bool] | None = None,
    ) -> list[Notification]:
        """The notifications received so far that match every given filter."""
        return [n for n in self._notifications if _matches(n, receiver, path, predicate)]

    async def wait_for(
        self,
        count: int = 1,
        *,
        timeout: float,
        receiver: str | None = None,
        path: str | None = None,
        predicate: Callable[[Notification], bool] | None = None,
    ) -> list[Notification]:
        """Wait until at least ``count`` matching notifications arrived; return them all.

        Matching is as in :meth:`received`. Raises :class:`TimeoutError` after ``timeout``
        seconds, naming what did arrive.
        """
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(
                    lambda: (
                        len(self.received(receiver=receiver, path=path, predicate=predicate))
                        >= count
                    )
                )
        except TimeoutError:
            got = self.received(receiver=receiver, path=path, predicate=predicate)
            raise TimeoutError(
                f"{len(got)} of {count} expected notification(s) "
                f"(receiver={receiver!r}, path={path!r}) within {timeout} s; "
                f"received overall: {self.describe()}"
            ) from None
        return self.received(receiver=receiver, path=path, predicate=predicate)

    def clear(self) -> None:
        """Forget everything received so far."""
        self._notifications.clear()
        self.malformed.clear()

    def describe(self) -> str:
        """A one-line summary of everything received (for assertion messages)."""
        if not self._notifications:
            return "nothing"
        return "; ".join(
            f"{n.path} {n.receiver} {n.status} {n.group_labels} {n.alertnames}"
            for n in self._notifications
        )

    # -- server ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received_at, received_wall = time.monotonic(), time.time()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self.malformed.append(body)
            return web.Response(status=400, text="expected a JSON object\n")
        async with self._changed:
            self._notifications.append(
                Notification(request.path, payload, received_at, received_wall)
            )
            self._changed.notify_all()
        return web.Response(text="ok\n")


def _matches(
    notification: Notification,
    receiver: str | None,
    path: str | None,
    predicate: Callable[[Notification], bool] | None,
) -> bool:
    return (
        (receiver is None or notification.receiver == receiver)
        and (path is None or notification.path == path)
        and (predicate is None or predicate(notification))
    )
