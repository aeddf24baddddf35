"""Simulated Meta HTTPS front ends: one aiohttp app answering for many hostnames.

The app dispatches on the Host header (port stripped) through `FrontendState.hosts`, a table
of `HostSpec`s whose defaults follow shared/facts/meta-outages.md. Faults (status, delays,
slow or oversize bodies, replaced content, redirect loops, silent drops) are set at run time
on the state, from Python or through the JSON control API under `/_sim/`, which answers only
while `FrontendState.control_enabled` is true. Every wait is capped at `MAX_WAIT` seconds and
ends early when the client goes away or the server shuts down.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import re
import secrets
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import hdrs, web

__all__ = [
    "DEFAULT_HOSTS",
    "MAX_WAIT",
    "STATE_KEY",
    "Fault",
    "FaultError",
    "FrontendServer",
    "FrontendState",
    "HostSpec",
    "build_frontend_app",
    "host_of",
    "serve_frontend",
]

MAX_WAIT = 300.0  # seconds: no fault may hold a request longer than this
MAX_BODY_SIZE = 1 << 30  # an "oversize" body is streamed, but still not endless
POLL_INTERVAL = 0.05  # how often a waiting handler checks whether its client left
SLOW_CHUNK = 512
BIG_CHUNK = 64 * 1024
FILLER = b" " * BIG_CHUNK
CONTROL_PREFIX = "/_sim/"

GRAPH_VERSION = "v21.0"
ALT_SVC = 'h3=":443"; ma=86400'
HTML_TYPE = 'text/html; charset="utf-8"'
JSON_TYPE = "application/json; charset=UTF-8"
LAB_USER_ID = "100000000000001"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_VERSION_PREFIX = re.compile(r"^/v\d+(?:\.\d+)?(?=/|$)")

HostKind = Literal["page", "graph", "redirect", "login_redirect"]


# --------------------------------------------------------------------------- host table


@dataclass(frozen=True)
class HostSpec:
    """How one hostname answers when no fault is set.

    kind: "page" serves `pages` (path -> template name, 404 elsewhere); "graph" is the
    Graph API; "redirect" sends a 301 to `location` + the same path and query;
    "login_redirect" sends a 302 to the login page at `location` with `next=` set.
    """

    kind: HostKind
    title: str = ""
    location: str = ""
    pages: Mapping[str, str] = field(default_factory=lambda: {"/": "home"})
    me_without_token: str = "no_token_me"  # graph: key into GRAPH_ERRORS for /me


def _page(title: str, **pages: str) -> HostSpec:
    return HostSpec("page", title=title, pages={"/": "home", **pages})


def _moved(location: str) -> HostSpec:
    return HostSpec("redirect", location=location)


FB_LOGIN = "https://www.facebook.com/login/"

DEFAULT_HOSTS: Mapping[str, HostSpec] = MappingProxyType(
    {
        "graph.facebook.com": HostSpec("graph", title="Graph API"),
        "graph.instagram.com": HostSpec(
            "graph", title="Instagram Graph API", me_without_token="bad_token"
        ),
        "www.facebook.com": HostSpec(
            "page", title="Facebook - log in or sign up", pages={"/": "home", "/login/": "login"}
        ),
        "m.facebook.com": _page("Facebook"),
        "www.instagram.com": _page("Instagram"),
        "i.instagram.com": _page("Instagram"),
        "www.messenger.com": _page("Messenger"),
        "web.whatsapp.com": _page("WhatsApp Web"),
        "www.whatsapp.com": _page("WhatsApp | Secure and Reliable Free Private Messaging"),
        "business.facebook.com": _page("Meta Business Suite"),
        "adsmanager.facebook.com": HostSpec(
            "login_redirect", title="Meta Ads Manager", location=FB_LOGIN
        ),
        "www.threads.com": _page("Threads"),
        "static.xx.fbcdn.net": _page("Facebook static content"),
        "mmg.whatsapp.net": _page("WhatsApp media"),
        "edge-chat.facebook.com": _page("Messenger chat edge"),
        # Apex names and the old Threads domain only redirect (Threads moved 2025-04-24).
        "facebook.com": _moved("https://www.facebook.com"),
        "instagram.com": _moved("https://www.instagram.com"),
        "messenger.com": _moved("https://www.messenger.com"),
        "whatsapp.com": _moved("https://www.whatsapp.com"),
        "threads.net": _moved("https://www.threads.com"),
        "www.threads.net": _moved("https://www.threads.com"),
        "threads.com": _moved("https://www.threads.com"),
    }
)


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    """A response not yet sent, so a fault can still change it."""

    status: int
    body: bytes = b""
    content_type: str = HTML_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        return {**self.headers, hdrs.CONTENT_TYPE: self.content_type}

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.all_headers())


def _random_id(nbytes: int = 8) -> str:
    return secrets.token_urlsafe(nbytes)


def _page_headers() -> dict[str, str]:
    return {
        "Alt-Svc": ALT_SVC,
        "Strict-Transport-Security": "max-age=15552000; preload",
        "X-Frame-Options": "DENY",
        "Cache-Control": "private, no-cache, no-store, must-revalidate",
        "x-fb-debug": _random_id(32),
    }


_DOC = (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
    "</head><body>{body}</body></html>\n"
)
PAGE_TEMPLATES: Mapping[str, tuple[int, str, str]] = MappingProxyType(
    {
        # name: (status, title, body); "{title}" is the product title from HostSpec.
        "home": (200, "{title}", '<div id="sim-root"><h1>{title}</h1></div>'),
        "login": (
            200,
            "Log in to Facebook",
            '<form id="login_form" action="/login/device-based/regular/login/" method="post">'
            '<input type="text" name="email" id="email"><input type="password" name="pass" '
            'id="pass"><button type="submit" name="login" id="loginbutton">Log in</button>'
            "</form>",
        ),
        "not_found": (404, "Page not found", "<h2>This page isn't available</h2>"),
        "error": (
            500,
            "Error",
            "<h1>Sorry, something went wrong.</h1><p>We're working on getting this fixed as "
            "soon as we can.</p>",
        ),
        "misdirected": (421, "Misdirected Request", "<h1>421 Misdirected Request</h1>"),
    }
)


def html_answer(template: str, title: str = "", status: int | None = None) -> Answer:
    default_status, page_title, body = PAGE_TEMPLATES[template]
    safe = html.escape(title)
    text = _DOC.format(title=page_title.format(title=safe), body=body.format(title=safe))
    return Answer(status or default_status, text.encode(), HTML_TYPE, _page_headers())


def json_answer(status: int, doc: object, headers: Mapping[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(doc).encode(), JSON_TYPE, dict(headers or {}))


@dataclass(frozen=True)
class GraphError:
    code: int
    message: str
    auth_error: str | None = None  # error in WWW-Authenticate; None = header not sent
    status: int = 400
    type: str = "OAuthException"
    transient: bool = False


GRAPH_ERRORS: Mapping[str, GraphError] = MappingProxyType(
    {
        "no_token_me": GraphError(
            2500,
            "An active access token must be used to query information about the current user.",
            "invalid_request",
        ),
        "no_token": GraphError(
            104, "An access token is required to request this resource.", "invalid_request"
        ),
        "bad_token": GraphError(
            190, "Invalid OAuth access token - Cannot parse access token", "invalid_token"
        ),
        "unsupported": GraphError(
            100,
            "Unsupported get request. Object does not exist, cannot be loaded due to missing "
            "permissions, or does not support this operation.",
            type="GraphMethodException",
        ),
        "server": GraphError(
            2,
            "An unexpected error has occurred. Please retry your request later.",
            status=500,
            transient=True,
        ),
    }
)


def _graph_headers(version: str, trace_id: str) -> dict[str, str]:
    return {
        "Alt-Svc": ALT_SVC,
        "x-fb-request-id": _random_id(16),
        "x-fb-trace-id": trace_id,
        "x-fb-rev": "1000000000",
        "facebook-api-version": version,
        "Access-Control-Allow-Origin": "*",
        "Cache-Control": "no-store",
    }


def graph_error_answer(
    err: GraphError, version: str = GRAPH_VERSION, status: int | None = None
) -> Answer:
    trace_id = _random_id()
    error: dict[str, object] = {"message": err.message, "type": err.type, "code": err.code}
    if err.transient:
        error["is_transient"] = True
    error["fbtrace_id"] = trace_id
    headers = _graph_headers(version, trace_id)
    if err.auth_error:
        headers["WWW-Authenticate"] = (
            f'OAuth "Facebook Platform" "{err.auth_error}" "{err.message}"'
        )
    return json_answer(status or err.status, {"error": error}, headers)


def _access_token(request: web.Request) -> str | None:
    token = request.query.get("access_token")
    if not token:
        scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        token = value.strip() if scheme.lower() in ("bearer", "oauth") else None
    return token or None


def _graph_authorized(path: str, request: web.Request, state: FrontendState) -> Answer | None:
    """Answers for a valid lab token: /me and a WhatsApp phone number's health_status."""
    if path == "/me":
        return json_answer(200, {"name": "Lab User", "id": LAB_USER_ID})
    object_id = path.strip("/")
    wants_health = "health_status" in request.query.get("fields", "").split(",")
    if not (object_id.isdigit() and wants_health):
        return None
    can_send = state.whatsapp_health
    entity = {"entity_type": "PHONE_NUMBER", "id": object_id, "can_send_message": can_send}
    health = {"can_send_message": can_send, "entities": [entity]}
    return json_answer(200, {"health_status": health, "id": object_id})


def graph_answer(request: web.Request, spec: HostSpec, state: FrontendState) -> Answer:
    match = _VERSION_PREFIX.match(request.path)
    version = match.group(0).lstrip("/") if match else GRAPH_VERSION
    path = request.path[match.end() :] if match else request.path
    path = path or "/"
    token = _access_token(request)
    if token is None:
        key = spec.me_without_token if path.rstrip("/") == "/me" else "no_token"
    elif token not in state.valid_tokens:
        key = "bad_token"
    else:
        answer = _graph_authorized(path.rstrip("/") or "/", request, state)
        if answer is not None:
            return answer
        key = "unsupported"
    return graph_error_answer(GRAPH_ERRORS[key], version)


def page_answer(request: web.Request, spec: HostSpec, state: FrontendState) -> Answer:
    return html_answer(spec.pages.get(request.path, "not_found"), spec.title)


def _redirect(status: int, location: str) -> Answer:
    headers = {hdrs.LOCATION: location, "Alt-Svc": ALT_SVC}
    return Answer(status, b"", HTML_TYPE, headers)


def redirect_answer(request: web.Request, spec: HostSpec, state: FrontendState) -> Answer:
    return _redirect(301, spec.location + str(request.rel_url))


def login_redirect_answer(request: web.Request, spec: HostSpec, state: FrontendState) -> Answer:
    here = f"https://{host_of(request.headers.get(hdrs.HOST, ''))}{request.rel_url}"
    return _redirect(302, f"{spec.location}?next={quote(here, safe='')}")


AnswerFn = Callable[[web.Request, HostSpec, "FrontendState"], Answer]
ANSWERS: Mapping[str, AnswerFn] = MappingProxyType(
    {
        "page": page_answer,
        "graph": graph_answer,
        "redirect": redirect_answer,
        "login_redirect": login_redirect_answer,
    }
)

# What a status fault looks like per kind: Graph answers JSON, everything else Meta's HTML.
ERROR_ANSWERS: Mapping[str, Callable[[int], Answer]] = MappingProxyType(
    {"graph": lambda status: graph_error_answer(GRAPH_ERRORS["server"], status=status)}
)


def _error_answer(kind: str, status: int) -> Answer:
    return ERROR_ANSWERS.get(kind, lambda s: html_answer("error", status=s))(status)


# --------------------------------------------------------------------------- faults


class FaultError(ValueError):
    """A fault description that cannot be applied."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_seconds(value: object) -> bool:
    return _is_number(value) and 0 <= value <= MAX_WAIT  # type: ignore[operator]


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BODY_SIZE


def _is_location(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("/", "http://", "https://"))


_FIELD_CHECKS: Mapping[str, tuple[Callable[[object], bool], str]] = MappingProxyType(
    {
        "host": (lambda v: isinstance(v, str) and bool(v), "a hostname or '*'"),
        "path": (_optional(lambda v: isinstance(v, str) and v.startswith("/")), "a /path"),
        "status": (_optional(_is_status), "an HTTP status 100-599"),
        "delay": (_is_seconds, f"seconds from 0 to {MAX_WAIT:g}"),
        "body": (_optional(lambda v: isinstance(v, str)), "a string"),
        "body_delay_per_chunk": (_is_seconds, f"seconds from 0 to {MAX_WAIT:g}"),
        "body_size": (_optional(_is_size), f"a byte count from 0 to {MAX_BODY_SIZE}"),
        "redirect_loop": (lambda v: isinstance(v, bool), "true or false"),
        "redirect_to": (_optional(_is_location), "a /path or an http(s):// URL"),
        "drop": (lambda v: isinstance(v, bool), "true or false"),
        "close": (lambda v: isinstance(v, bool), "true or false"),
    }
)
_ALIASES = MappingProxyType({"hang": "drop"})


@dataclass(frozen=True)
class Fault:
    """One fault for `host` ("*" = every host in the table), optionally only under `path`.

    Applied in this order: close (drop the connection, no answer) / drop (accept, never
    answer until the client leaves: "hang"), delay before headers, redirect_loop (302 to the
    same URL) / redirect_to (302 elsewhere, e.g. A->B->A), status (Meta's error page or Graph
    error JSON), body (replaced content), then the body is streamed when body_size (exactly
    that many bytes, padded or cut) or body_delay_per_chunk (a pause before every chunk) is set.
    `path` matches that path and everything below it ("/login/" matches "/login/x").
    """

    host: str = "*"
    path: str | None = None
    status: int | None = None
    delay: float = 0.0
    body: str | None = None
    body_delay_per_chunk: float = 0.0
    body_size: int | None = None
    redirect_loop: bool = False
    redirect_to: str | None = None
    drop: bool = False
    close: bool = False

    def __post_init__(self) -> None:
        for name, (check, expected) in _FIELD_CHECKS.items():
            value = getattr(self, name)
            if not check(value):
                raise FaultError(f"fault field {name!r} must be {expected}, got {value!r}")
        object.__setattr__(self, "host", self.host.lower().rstrip("."))

    @classmethod
    def from_json(cls, data: object) -> Fault:
        if not isinstance(data, dict):
            raise FaultError("a fault must be a JSON object")
        data = {_ALIASES.get(key, key): value for key, value in data.items()}
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise FaultError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.host, self.path)

    def matches_path(self, path: str) -> bool:
        if self.path is None:
            return True
        base = self.path.rstrip("/")
        return path == self.path or path == base or path.startswith(base + "/")


# --------------------------------------------------------------------------- state


@dataclass
class FrontendState:
    """Everything the simulated front ends know; mutate it while serving."""

    hosts: dict[str, HostSpec] = field(default_factory=lambda: dict(DEFAULT_HOSTS))
    control_enabled: bool = False
    valid_tokens: set[str] = field(default_factory=set)
    whatsapp_health: str = "AVAILABLE"  # AVAILABLE | LIMITED | BLOCKED
    faults: dict[tuple[str, str | None], Fault] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    path_requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    in_flight: int = 0  # requests being answered now (a hung client shows up here)

    def set_fault(self, fault: Fault) -> None:
        self.faults[fault.key] = fault

    def clear_fault(self, host: str = "*", path: str | None = None) -> bool:
        return self.faults.pop((host.lower().rstrip("."), path), None) is not None

    def clear_faults(self) -> None:
        self.faults.clear()

    def fault_for(self, host: str, path: str) -> Fault | None:
        """The most specific fault: own host over "*", then the longest matching path."""
        candidates = [
            f for f in self.faults.values() if f.host in (host, "*") and f.matches_path(path)
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda f: (f.host == host, len(f.path or "") - 1))

    def count(self, host: str, path: str) -> None:
        self.requests[host] += 1
        self.path_requests[(host, path)] += 1

    def reset_counts(self) -> None:
        self.requests.clear()
        self.path_requests.clear()


STATE_KEY = web.AppKey("frontend_state", FrontendState)
_STOPPING_KEY = web.AppKey("frontend_stopping", asyncio.Event)


def host_of(header: str) -> str:
    """The Host header's name, lower case, without port or trailing dot."""
    host = header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


# --------------------------------------------------------------------------- serving


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _pause(request: web.Request, seconds: float) -> bool:
    """Wait up to `seconds` (capped); False as soon as the client left or the server stops."""
    loop = asyncio.get_running_loop()
    stopping = request.app[_STOPPING_KEY]
    deadline = loop.time() + min(seconds, MAX_WAIT)
    while not (_client_gone(request) or stopping.is_set()):
        left = deadline - loop.time()
        if left <= 0:
            return True
        await asyncio.sleep(min(POLL_INTERVAL, left))
    return False


def _hang_up(request: web.Request) -> web.Response:
    """End the connection with no HTTP answer at all."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp's write of this placeholder then fails quietly on the closed transport.
    return web.Response(status=499)


def _chunks(body: bytes, size: int | None, chunk_size: int) -> Iterator[bytes]:
    if size is not None:
        body = body[:size]
    for start in range(0, len(body), chunk_size):
        yield body[start : start + chunk_size]
    left = (size or 0) - len(body)
    while left > 0:
        yield FILLER[: min(left, chunk_size)]
        left -= chunk_size


async def _stream(request: web.Request, answer: Answer, fault: Fault) -> web.StreamResponse:
    """Headers at once, then the body in chunks, each after `body_delay_per_chunk`."""
    resp = web.StreamResponse(status=answer.status, headers=answer.all_headers())
    resp.enable_chunked_encoding()  # no Content-Length: the client must cap the read itself
    chunk_size = BIG_CHUNK if fault.body_size is not None else SLOW_CHUNK
    try:
        await resp.prepare(request)
        for chunk in _chunks(answer.body, fault.body_size, chunk_size):
            pause = fault.body_delay_per_chunk
            if pause and not await _pause(request, pause):
                return _hang_up(request)  # never end a cut body as if it were complete
            await resp.write(chunk)
        await resp.write_eof()
    except ConnectionError:
        pass  # the client left mid-body
    return resp


def _faulted_answer(request: web.Request, spec: HostSpec, answer: Answer, fault: Fault) -> Answer:
    redirect_status = fault.status if fault.status in REDIRECT_STATUSES else 302
    if fault.redirect_loop:
        answer = _redirect(redirect_status, str(request.rel_url))
    elif fault.redirect_to is not None:
        answer = _redirect(redirect_status, fault.redirect_to)
    elif fault.status is not None:
        answer = _error_answer(spec.kind, fault.status)
    if fault.body is not None:
        answer = replace(answer, body=fault.body.encode())
    return answer


async def _answer_with_fault(
    request: web.Request, spec: HostSpec, answer: Answer, fault: Fault
) -> web.StreamResponse:
    if fault.close:
        return _hang_up(request)
    if fault.drop:
        await _pause(request, MAX_WAIT)
        return _hang_up(request)
    if fault.delay and not await _pause(request, fault.delay):
        return _hang_up(request)
    answer = _faulted_answer(request, spec, answer, fault)
    if fault.body_delay_per_chunk or fault.body_size is not None:
        return await _stream(request, answer, fault)
    return answer.response()


async def _handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if state.control_enabled and request.path.startswith(CONTROL_PREFIX):
        return await _control(request, state)
    host = host_of(request.headers.get(hdrs.HOST, ""))
    state.count(host, request.path)
    spec = state.hosts.get(host)
    if spec is None:
        return html_answer("misdirected").response()
    state.in_flight += 1
    try:
        answer = ANSWERS[spec.kind](request, spec, state)
        fault = state.fault_for(host, request.path)
        if fault is None:
            return answer.response()
        return await _answer_with_fault(request, spec, answer, fault)
    finally:
        state.in_flight -= 1


# --------------------------------------------------------------------------- control API


def _json(status: int, doc: object) -> web.Response:
    return web.json_response(doc, status=status)


async def _get_faults(request: web.Request, state: FrontendState) -> web.Response:
    return _json(200, {"faults": [f.to_json() for f in state.faults.values()]})


async def _set_faults(request: web.Request, state: FrontendState) -> web.Response:
    try:
        doc = await request.json()
        items = doc if isinstance(doc, list) else [doc]
        faults = [Fault.from_json(item) for item in items]
    except ValueError as exc:  # JSON syntax and FaultError alike
        return _json(400, {"error": str(exc)})
    for fault in faults:  # all or nothing: validated before any is applied
        state.set_fault(fault)
    return _json(200, {"faults": [f.to_json() for f in faults]})


async def _clear_faults(request: web.Request, state: FrontendState) -> web.Response:
    if "host" not in request.query and "path" not in request.query:
        cleared = len(state.faults)
        state.clear_faults()
    else:
        host = request.query.get("host", "*")
        cleared = int(state.clear_fault(host, request.query.get("path")))
    return _json(200, {"cleared": cleared})


async def _get_requests(request: web.Request, state: FrontendState) -> web.Response:
    paths = [{"host": h, "path": p, "count": n} for (h, p), n in state.path_requests.items()]
    doc = {"hosts": dict(state.requests), "paths": paths, "in_flight": state.in_flight}
    return _json(200, doc)


async def _reset_requests(request: web.Request, state: FrontendState) -> web.Response:
    state.reset_counts()
    return _json(200, {"cleared": True})


ControlFn = Callable[[web.Request, FrontendState], Awaitable[web.Response]]
CONTROL_ROUTES: Mapping[str, Mapping[str, ControlFn]] = MappingProxyType(
    {
        "/_sim/faults": {
            "GET": _get_faults,
            "PUT": _set_faults,
            "POST": _set_faults,
            "DELETE": _clear_faults,
        },
        "/_sim/requests": {"GET": _get_requests, "DELETE": _reset_requests},
    }
)


async def _control(request: web.Request, state: FrontendState) -> web.Response:
    methods = CONTROL_ROUTES.get(request.path.rstrip("/"))
    if methods is None:
        return _json(404, {"error": f"no control endpoint {request.path}"})
    handler = methods.get(request.method)
    if handler is None:
        return _json(405, {"error": f"use one of {', '.join(methods)}"})
    return await handler(request, state)


# --------------------------------------------------------------------------- app and server


async def _on_shutdown(app: web.Application) -> None:
    app[_STOPPING_KEY].set()  # ends every pending delay and hang at once


def build_frontend_app(state: FrontendState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    app[_STOPPING_KEY] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def serve_frontend(
    state: FrontendState,
    ssl_context: ssl.SSLContext | None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 2.0,
) -> tuple[web.AppRunner, int]:
    """Start the front ends on host:port (0 = any free port); returns the runner and the
    bound port. Call `runner.cleanup()` to stop. `ssl_context=None` serves plain HTTP."""
    runner = web.AppRunner(
        build_frontend_app(state),
        handle_signals=False,
        handler_cancellation=True,  # a client that leaves cancels its handler at once
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site.port


class FrontendServer:
    """`serve_frontend` as an object: `async with FrontendServer(state, ctx) as server:`."""

    def __init__(
        self,
        state: FrontendState,
        ssl_context: ssl.SSLContext | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.state = state
        self.host = host
        self._ssl_context = ssl_context
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> int:
        if self._runner is not None:
            raise RuntimeError("front end already started")
        self._runner, self.port = await serve_frontend(
            self.state, self._ssl_context, self.host, self._requested_port
        )
        return self.port

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FrontendServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
