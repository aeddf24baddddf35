"""HTTP(S) prober on aiohttp, timed by phase: resolve, connect, tls, processing, transfer.

Each probe gets a fresh session and connection (no keep-alive, no DNS cache), as
blackbox_exporter does, so every phase is measured every time. Name resolution goes
through the exporter's resolver; connect and TLS through probes.net, via a connector
that splits aiohttp's single "create connection" step into its two real phases.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .. import __version__
from ..egress import EgressPolicy
from ..httpbody import read_capped
from ..model import Phase, Reason
from ..spec import CheckSpec
from . import net
from .base import ProbeEnv, ProbeFailure, ProbeRun

USER_AGENT = f"meta-outage-exporter/{__version__} (+https://github.com/meta-outage-exporter)"
_STATUS_RE = re.compile(r"^(?:(\d)xx|(\d{3})-(\d{3})|<(\d{3})|(\d{3}))$")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def parse_status_spec(spec: int | str) -> tuple[int, int]:
    """(low, high) inclusive from 200, "2xx", "200-299" or "<500". ValueError otherwise."""
    match = _STATUS_RE.match(str(spec).strip())
    if not match:
        raise ValueError(f"{spec!r} is not a status code, class (2xx), range (200-299) or <NNN")
    klass, low, high, below, single = match.groups()
    if klass:
        return int(klass) * 100, int(klass) * 100 + 99
    if low:
        return int(low), int(high)
    if below:
        return 100, int(below) - 1
    return int(single), int(single)


@dataclass(frozen=True, slots=True)
class HttpParams:
    url: str
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    body: str | None = None
    valid_status_codes: tuple[int | str, ...] = ("2xx",)
    follow_redirects: bool = True
    max_redirects: int = 5
    body_regex: str | None = None
    body_not_regex: str | None = None
    # Header name -> regex its value must match (a missing header fails).
    header_regex: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    # Dotted JSON path -> expected value, e.g. {"error.type": "OAuthException"}.
    json_expect: Mapping[str, str | bool | int | float] = field(default_factory=lambda: _EMPTY)
    max_body_bytes: int = 1024 * 1024
    ca_file: str | None = None
    # Optional credentials for authenticated checks: the token never sits in the config.
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None

    def check(self) -> list[tuple[str, str]]:
        problems = net.ca_file_problem(self.ca_file)
        try:
            url = URL(self.url)
        except ValueError:  # e.g. "http://[::1": yarl cannot even split it
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            problems.append(("url", f"{self.url!r} is not an http:// or https:// URL with a host"))
        for index, spec in enumerate(self.valid_status_codes):
            try:
                parse_status_spec(spec)
            except ValueError as exc:
                problems.append((f"valid_status_codes[{index}]", str(exc)))
        for name, pattern in [
            ("body_regex", self.body_regex),
            ("body_not_regex", self.body_not_regex),
            *((f"header_regex.{k}", v) for k, v in self.header_regex.items()),
        ]:
            if pattern is not None:
                try:
                    re.compile(pattern)
                except (re.error, OverflowError) as exc:  # a{99999999999}: OverflowError
                    problems.append((name, f"invalid regular expression: {exc}"))
        if self.max_redirects < 0:
            problems.append(("max_redirects", "must be 0 or more"))
        if self.max_body_bytes <= 0:
            problems.append(("max_body_bytes", "must be positive"))
        if self.bearer_token_env and self.bearer_token_file:
            problems.append(
                ("bearer_token_file", "give bearer_token_env or bearer_token_file, not both")
            )
        if self.bearer_token_env and not os.environ.get(self.bearer_token_env):
            name = _shown_if(self.bearer_token_env, _ENV_NAME_RE.fullmatch(self.bearer_token_env))
            problems.append(("bearer_token_env", f"environment variable {name} is empty or unset"))
        if self.bearer_token_file and not net.readable(self.bearer_token_file):
            path = self.bearer_token_file
            name = _shown_if(path, path.startswith(("/", "./", "../", "~")))
            problems.append(("bearer_token_file", f"cannot read {name}"))
        return problems

    @property
    def status_ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple(parse_status_spec(s) for s in self.valid_status_codes)


# Environment variables are named in capitals by convention; tokens are mixed case.
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")


def _shown_if(value: str, plausible: object) -> str:
    """The name of a token's env var or file, unless it looks like the token itself
    (pasted in by mistake): error messages must never carry a secret."""
    if plausible and len(value) <= 64:
        return value
    return "(not shown: is it the token itself? give the variable's name or the file's path)"


def bearer_token(params: HttpParams) -> str | None:
    """The token, read at probe time so a rotated file is picked up without a reload."""
    if params.bearer_token_env:
        return os.environ.get(params.bearer_token_env) or None
    if params.bearer_token_file:
        return Path(params.bearer_token_file).read_text().strip() or None
    return None


def json_lookup(document: Any, path: str) -> Any:
    """document["a"]["b"][0] for "a.b.0"; KeyError when the path is not there."""
    node = document
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


def judge_content(params: HttpParams, headers: Mapping[str, str], body: bytes) -> str | None:
    """Pure: why the answer's content is wrong, or None when it is right."""
    for name, pattern in params.header_regex.items():
        value = headers.get(name)
        if value is None or not re.search(pattern, value):
            return f"header {name} is {value!r}, expected /{pattern}/"
    text = body.decode("utf-8", errors="replace")
    if params.body_regex and not re.search(params.body_regex, text):
        return f"body does not match /{params.body_regex}/"
    if params.body_not_regex and re.search(params.body_not_regex, text):
        return f"body matches /{params.body_not_regex}/"
    if params.json_expect:
        try:
            document = json.loads(text)
        except ValueError:
            return "body is not JSON"
        for path, expected in params.json_expect.items():
            try:
                actual = json_lookup(document, path)
            except KeyError:
                return f"JSON has no {path}"
            if actual != expected or (type(actual) is bool and type(expected) is not bool):
                return f"JSON {path} is {actual!r}, expected {expected!r}"
    return None


class _ProbeResolver(AbstractResolver):
    """aiohttp's resolver hook, answered by the exporter's resolver and timed as 'resolve'."""

    def __init__(self, check: CheckSpec, env: ProbeEnv, run: ProbeRun, target_host: str) -> None:
        self._check, self._env, self._run, self._target = check, env, run, target_host
        self._deadline = time.monotonic() + check.timeout

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        override = self._check.resolve_to if host == self._target else ()
        with self._run.clock.phase(Phase.RESOLVE):
            addresses = await self._env.resolver.resolve(
                host, self._check.ip_family, deadline=self._deadline, override=override
            )
        return resolve_results(host, port, addresses)

    async def close(self) -> None:
        return None


def resolve_results(host: str, port: int, addresses: list[str]) -> list[ResolveResult]:
    """aiohttp's resolver answer for addresses the exporter's own resolver found."""
    return [
        ResolveResult(
            hostname=host,
            host=address,
            port=port,
            family=socket.AF_INET6 if ":" in address else socket.AF_INET,
            proto=0,
            flags=socket.AI_NUMERICHOST,
        )
        for address in addresses
    ]


class _PhaseTimingConnector(aiohttp.TCPConnector):
    """Connects and handshakes through probes.net so connect and tls are timed apart.

    Overrides a private aiohttp hook (stable since 3.10); test_http_probe's phase test
    fails if an aiohttp release changes it.
    """

    def __init__(self, run: ProbeRun, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._run = run
        self._policy = policy

    async def _wrap_create_connection(  # type: ignore[override]
        self,
        *args: Any,
        addr_infos: list[Any],
        req: Any,
        timeout: Any,
        client_error: Any = None,
        **kwargs: Any,
    ) -> Any:
        addresses = [info[4][0] for info in addr_infos]
        port = addr_infos[0][4][1]
        sock = await net.connect(addresses, port, self._run, self._policy)
        context = kwargs.get("ssl")
        if not context:
            transport, protocol = await self._loop.create_connection(*args, **kwargs, sock=sock)
            _time_first_byte(protocol, self._run)
            return transport, protocol
        server_name = kwargs.get("server_hostname") or ""
        with self._run.clock.phase(Phase.TLS):
            # asyncio owns the socket now and closes it on failure (see net.handshake).
            try:
                transport, protocol = await self._loop.create_connection(*args, **kwargs, sock=sock)
            except OSError as exc:  # ssl.SSLError and ConnectionError are OSErrors
                raise net.tls_failure(exc, server_name) from None
        net.record_tls_facts(transport.get_extra_info("ssl_object"), self._run)
        _time_first_byte(protocol, self._run)
        return transport, protocol


def _time_first_byte(protocol: Any, run: ProbeRun) -> None:
    """End `processing` at the answer's first bytes, as blackbox does, rather than once
    aiohttp has parsed the headers and the probe's task has woken: under load that wait is
    the exporter's own queueing, not the server's time (docs/benchmarks.md). The rest, up
    to the headers, counts as transfer."""
    received = protocol.data_received

    def first(data: bytes) -> None:
        del protocol.data_received  # the class's method from now on
        if run.clock.current is Phase.PROCESSING:
            run.clock.enter(Phase.TRANSFER)
        received(data)

    protocol.data_received = first


async def _headers_sent(_: Any, context: Any, __: Any) -> None:
    context.trace_request_ctx.clock.enter(Phase.PROCESSING)


async def _answer_started(_: Any, context: Any, __: Any) -> None:
    context.trace_request_ctx.clock.leave()


def _trace_config() -> aiohttp.TraceConfig:
    """One for every probe, the probe's ProbeRun passed as trace_request_ctx: a TraceConfig
    and its signals form a reference cycle, so one per probe left ~40 objects a probe for
    the cyclic collector, whose pauses skewed probe timings (docs/benchmarks.md)."""
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    trace.on_request_end.append(_answer_started)
    trace.on_request_redirect.append(_answer_started)
    return trace


_TRACE = _trace_config()


async def _read_capped(response: aiohttp.ClientResponse, cap: int, run: ProbeRun) -> bytes:
    with run.clock.phase(Phase.TRANSFER):
        return await read_capped(response, cap, partial(ProbeFailure, Reason.BODY_TOO_LARGE))


def _in_ranges(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= status <= high for low, high in ranges)


async def _exchange(session: aiohttp.ClientSession, params: HttpParams, run: ProbeRun) -> str:
    headers = dict(params.headers)
    token = bearer_token(params)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with session.request(
        params.method,
        params.url,
        headers=headers,
        data=params.body,
        allow_redirects=params.follow_redirects,
        max_redirects=params.max_redirects + 1,  # aiohttp: N means N-1 followed, 0 endless
        trace_request_ctx=run,
    ) as response:
        run.facts["http_status"] = response.status
        if not _in_ranges(response.status, params.status_ranges):
            expected = ", ".join(map(str, params.valid_status_codes))
            raise ProbeFailure(Reason.HTTP_STATUS, f"HTTP {response.status}, expected {expected}")
        body = (
            b""
            if params.method == "HEAD"
            else await _read_capped(response, params.max_body_bytes, run)
        )
        problem = judge_content(params, response.headers, body)
        if problem:
            raise ProbeFailure(Reason.CONTENT_MISMATCH, problem)
        hops = len(response.history)
        return f"HTTP {response.status}, {len(body)} bytes" + (
            f", {hops} redirects" if hops else ""
        )


async def probe_http(check: CheckSpec, env: ProbeEnv, run: ProbeRun) -> str:
    params: HttpParams = check.params
    target_host = URL(params.url).host or ""
    connector = _PhaseTimingConnector(
        run,
        env.policy,
        resolver=_ProbeResolver(check, env, run, target_host),
        use_dns_cache=False,
        force_close=True,
        ssl=env.ssl_context(params.ca_file),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        trace_configs=[_TRACE],
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": USER_AGENT},
    )
    async with session:
        try:
            return await _exchange(session, params, run)
        except aiohttp.TooManyRedirects:
            raise ProbeFailure(
                Reason.HTTP_REDIRECT_LOOP, f"more than {params.max_redirects} redirects"
            ) from None
        except aiohttp.ClientResponseError as exc:
            raise ProbeFailure(Reason.HTTP_PROTOCOL, f"bad HTTP answer: {exc.message}") from None
        except aiohttp.ClientError as exc:
            # Broken mid-answer, invalid redirect target, reset...: the server spoke bad HTTP.
            raise ProbeFailure(
                Reason.HTTP_PROTOCOL, f"connection broke mid-answer: {type(exc).__name__}"
            ) from None
