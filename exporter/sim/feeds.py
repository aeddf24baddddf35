"""Fake outside feeds: Meta's status page (orgs.json) and a RIS Live WebSocket.

Both serve the documented shapes (../shared/facts/meta-outages.md) and change on command,
so tests can replay 2021: announcements, withdrawals by most peers, re-announcements,
disconnects and malformed messages. In-process (FeedServer) for tests on loopback; as a
process with a control API on a UNIX socket (`python -m exporter.sim feeds`) for the lab.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from aiohttp import WSMsgType, web

from .control import ControlError, ControlServer, json_errors, read_body

log = logging.getLogger(__name__)

STATUS_PATH = "/data/orgs.json"
RIS_PATH = "/v1/ws/"
BASELINE_PATH = "/data/routing-status/data.json"
LOOKING_GLASS_PATH = "/data/looking-glass/data.json"
META_ASN = 32934
# Status orgs seen on metastatus.com (facts file), each with one component.
DEFAULT_ORGS = (
    ("facebook-login", "Facebook Login"),
    ("graph-api", "Graph API"),
    ("ads-manager", "Ads Manager"),
    ("marketing-api", "Marketing API"),
    ("messenger", "Messenger Platform"),
    ("whatsapp-business-api", "WhatsApp Business API"),
)
NO_ISSUES = "No known issues"


class StatusPage:
    """orgs.json with an ETag that changes with every edit; 304 for a matching If-None-Match."""

    def __init__(self) -> None:
        self.requests = 0
        self.not_modified = 0
        self.version = 0
        self.reset()

    def reset(self, orgs: Iterable[tuple[str, str]] = DEFAULT_ORGS) -> None:
        """Every org back to "No known issues", served as JSON (the counters keep counting)."""
        self.orgs: list[dict[str, Any]] = [
            {
                "id": org,
                "name": name,
                "services": [{"id": org, "name": name, "status": NO_ISSUES, "time": 0}],
                "rss_file_paths": [f"/outage-events-feed-{org}.rss"],
            }
            for org, name in orgs
        ]
        self.version += 1
        self.raw: str | None = None  # served instead of the JSON (malformed-document tests)
        self.http_status = 200

    def set_status(self, org: str, component: str, status: str) -> None:
        entry = next((o for o in self.orgs if o["id"] == org), None)
        if entry is None:
            entry = {"id": org, "name": org, "services": [], "rss_file_paths": []}
            self.orgs.append(entry)
        service = next((s for s in entry["services"] if s["id"] == component), None)
        if service is None:
            service = {"id": component, "name": component, "status": status, "time": 0}
            entry["services"].append(service)
        service["status"] = status
        self.version += 1

    def serve(self, raw: str | None = None, http_status: int = 200) -> None:
        self.raw, self.http_status = raw, http_status
        self.version += 1

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        etag = f'"v{self.version}"'
        if self.http_status != 200:
            return web.Response(status=self.http_status, text="unavailable")
        if request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        body = self.raw if self.raw is not None else json.dumps(self.orgs)
        return web.Response(text=body, content_type="application/json", headers={"ETag": etag})


def ris_update(
    peer: str,
    *,
    announce: Iterable[str] = (),
    withdraw: Iterable[str] = (),
    timestamp: float = 0.0,
    host: str = "rrc00",
) -> dict[str, Any]:
    """A RIS Live UPDATE message of the documented shape."""
    announced = list(announce)
    return {
        "type": "ris_message",
        "data": {
            "timestamp": timestamp,
            "peer": peer,
            "peer_asn": "64500",
            "id": f"{peer}-{timestamp}",
            "host": host,
            "type": "UPDATE",
            "path": [64500, 3356, META_ASN] if announced else [],
            "announcements": [{"next_hop": peer, "prefixes": announced}] if announced else [],
            "withdrawals": list(withdraw),
        },
    }


def peers(count: int) -> list[str]:
    """Peer names for replays (documentation addresses: data only, never contacted)."""
    return [f"198.51.100.{n}" for n in range(1, count + 1)]


class RisLive:
    """A RIS Live hub: records subscriptions, sends what it is told to every client, and keeps
    the routing table those updates make (what the looking glass shows)."""

    def __init__(self) -> None:
        self.rib: dict[str, set[str]] = {}  # peer -> prefixes it announces now
        self.clients: set[web.WebSocketResponse] = set()
        self.subscriptions: list[dict[str, Any]] = []
        self.connections = 0
        self.clock = 1_633_361_000.0  # 2021-10-04 15:23 UTC, advanced per message

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.connections += 1
        self.clients.add(ws)
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    doc = json.loads(message.data)
                    if doc.get("type") == "ris_subscribe":
                        self.subscriptions.append(doc.get("data", {}))
        finally:
            self.clients.discard(ws)
        return ws

    async def send_text(self, text: str) -> int:
        """Send to every client; one that is gone or stuck (its vantage's link is down) is
        dropped, never allowed to fail or block the others."""
        sent = 0
        for ws in list(self.clients):
            try:
                async with asyncio.timeout(1.0):
                    await ws.send_str(text)
                sent += 1
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                log.info("fake RIS Live: dropping a client: %r", exc)
                self.clients.discard(ws)
        return sent

    async def update(
        self, peer_list: Iterable[str], announce: Iterable[str] = (), withdraw: Iterable[str] = ()
    ) -> int:
        announce, withdraw = list(announce), list(withdraw)
        sent = 0
        for peer in peer_list:
            routes = self.rib.setdefault(peer, set())
            routes.difference_update(withdraw)
            routes.update(announce)
            self.clock += 0.25
            sent = await self.send_text(
                json.dumps(
                    ris_update(peer, announce=announce, withdraw=withdraw, timestamp=self.clock)
                )
            )
        return sent

    async def disconnect(self) -> int:
        closing = list(self.clients)
        for ws in closing:
            await ws.close()
        return len(closing)


class Baseline:
    """RIPEstat routing-status for any resource: fixed peer counts."""

    def __init__(self, seeing: int = 320, total: int = 330) -> None:
        self.seeing, self.total = seeing, total

    async def handle(self, request: web.Request) -> web.Response:
        resource = request.query.get("resource", "")
        family = "v6" if ":" in resource else "v4"
        visibility = {family: {"ris_peers_seeing": self.seeing, "total_ris_peers": self.total}}
        return web.json_response({"data": {"resource": resource, "visibility": visibility}})


class LookingGlass:
    """RIPEstat's looking glass over the hub's routing table: for a prefix, every peer that
    announces exactly it, under collector "RRC00" (RIS Live says "rrc00": both spellings)."""

    def __init__(self, ris: RisLive) -> None:
        self.ris = ris
        self.requests = 0
        self.http_status = 200
        self.delay = 0.0  # seconds before answering: a slow RIPEstat
        self.last_query: dict[str, str] = {}

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.last_query = dict(request.query)
        await asyncio.sleep(self.delay)
        if self.http_status != 200:
            return web.Response(status=self.http_status, text="unavailable")
        resource = request.query.get("resource", "")
        peers = [
            {
                "asn_origin": str(META_ASN),
                "as_path": f"64500 3356 {META_ASN}",
                "prefix": resource,
                "peer": peer,
                "origin": "IGP",
                "next_hop": peer,
                "latest_time": "2021-10-04T15:20:00",
            }
            for peer, routes in sorted(self.ris.rib.items())
            if resource in routes
        ]
        rrcs = [{"rrc": "RRC00", "location": "Amsterdam, NL", "peers": peers}] if peers else []
        return web.json_response({"data": {"rrcs": rrcs}, "status": "ok"})


class FeedServer:
    """All four fakes on one HTTP listener."""

    def __init__(self) -> None:
        self.status = StatusPage()
        self.ris = RisLive()
        self.looking_glass = LookingGlass(self.ris)
        self.baseline = Baseline()
        app = web.Application()
        app.router.add_get(STATUS_PATH, self.status.handle)
        app.router.add_get(RIS_PATH, self.ris.handle)
        app.router.add_get(BASELINE_PATH, self.baseline.handle)
        app.router.add_get(LOOKING_GLASS_PATH, self.looking_glass.handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        self.base = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FeedServer:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.base = f"{host}:{bound}"
        return self

    async def close(self) -> None:
        await self.ris.disconnect()
        await self._runner.cleanup()

    def urls(self) -> dict[str, str]:
        return {
            "official_status": f"http://{self.base}{STATUS_PATH}",
            "bgp": f"ws://{self.base}{RIS_PATH}?client=meta-outage-exporter-test",
            "baseline": f"http://{self.base}{BASELINE_PATH}",
            "seed": f"http://{self.base}{LOOKING_GLASS_PATH}",
        }

    def state(self) -> dict[str, Any]:
        return {
            "status_requests": self.status.requests,
            "status_not_modified": self.status.not_modified,
            "ris_connections": self.ris.connections,
            "ris_clients": len(self.ris.clients),
            "ris_subscriptions": self.ris.subscriptions,
            "looking_glass_requests": self.looking_glass.requests,
        }


# --------------------------------------------------------------------------- control API


def _strings(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ControlError(key, "must be a list of strings")
    return value


def build_feeds_control_app(server: FeedServer) -> web.Application:
    async def get_state(_: web.Request) -> web.Response:
        return web.json_response(server.state())

    async def put_status(request: web.Request) -> web.Response:
        doc = await read_body(request, {"org", "component", "status"}, set())
        server.status.set_status(str(doc["org"]), str(doc["component"]), str(doc["status"]))
        return web.json_response({"ok": True})

    async def put_status_raw(request: web.Request) -> web.Response:
        doc = await read_body(request, set(), {"body", "http_status"})
        server.status.serve(doc.get("body"), int(doc.get("http_status", 200)))
        return web.json_response({"ok": True})

    async def post_bgp(request: web.Request) -> web.Response:
        doc = await read_body(request, {"peers"}, {"announce", "withdraw"})
        change = {k: _strings(doc, k) for k in ("announce", "withdraw") if k in doc}
        sent = await server.ris.update(_strings(doc, "peers"), **change)
        return web.json_response({"ok": True, "clients": sent})

    async def post_bgp_raw(request: web.Request) -> web.Response:
        doc = await read_body(request, {"text"}, set())
        return web.json_response(
            {"ok": True, "clients": await server.ris.send_text(str(doc["text"]))}
        )

    async def post_reset(_: web.Request) -> web.Response:
        server.status.reset()
        server.looking_glass.http_status, server.looking_glass.delay = 200, 0.0
        return web.json_response({"ok": True})

    async def put_looking_glass(request: web.Request) -> web.Response:
        doc = await read_body(request, {"http_status"}, set())
        server.looking_glass.http_status = int(doc["http_status"])
        return web.json_response({"ok": True})

    async def post_disconnect(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "closed": await server.ris.disconnect()})

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/state", get_state)
    app.router.add_put("/status", put_status)
    app.router.add_put("/status/raw", put_status_raw)
    app.router.add_post("/bgp/update", post_bgp)
    app.router.add_post("/bgp/raw", post_bgp_raw)
    app.router.add_post("/bgp/disconnect", post_disconnect)
    app.router.add_put("/bgp/looking-glass", put_looking_glass)
    app.router.add_post("/reset", post_reset)
    return app


async def run_feeds(listen: str, control: Path, out: IO[str] = sys.stdout) -> int:
    """Serve until SIGTERM/SIGINT; prints one JSON ready line once listening."""
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = FeedServer()
    control_server = ControlServer(build_feeds_control_app(server), control)
    try:
        await server.start(host, int(port))
        await control_server.start()
        print(json.dumps({"ready": True, "listen": server.base}), file=out, flush=True)
        await stop.wait()
        return 0
    finally:
        await control_server.close()
        await server.close()
