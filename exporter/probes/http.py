"""HTTP(S) prober, timed by phase: resolve, connect, tls, processing, transfer.

HTTP/1.1, HTTP/2 (ALPN, the default for https, as browsers) or HTTP/3 (QUIC only) per check,
on libcurl (probes.curl). Each probe is a fresh connection and a full handshake, as
blackbox_exporter's. Names are resolved by the exporter's resolver, every hop of a redirect
included, and each address is tried in turn with a share of the time left; libcurl only ever
connects to the address it is given.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from yarl import URL

from exporter import __version__
from exporter.model import Layer, Reason
from exporter.net.resolver import is_ip_literal
from exporter.spec import CheckSpec

from . import curl, sockets
from .base import QUIC_TIMEOUT_REASONS, ProbeEnv, ProbeFailure, ProbeRun
from .tcp import resolve

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
    # "1.1", "2" (h2 by ALPN, falling back to 1.1 as browsers do) or "3" (QUIC, no fallback).
    http_version: Literal["1.1", "2", "3"] = "2"
    # Optional credentials for authenticated checks: the token never sits in the config.
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None

    def check(self) -> list[tuple[str, str]]:
        problems = sockets.ca_file_problem(self.ca_file)
        try:
            url = URL(self.url)
        except ValueError:  # e.g. "http://[::1": yarl cannot even split it
            url = URL()
        if url.scheme not in ("http", "https") or not url.host:
            problems.append(("url", f"{self.url!r} is not an http:// or https:// URL with a host"))
        if self.http_version not in curl.HTTP_VERSIONS:
            choices = ", ".join(repr(v) for v in curl.HTTP_VERSIONS)
            problems.append(("http_version", f"{self.http_version!r} is not one of {choices}"))
        elif self.http_version == "3" and url.scheme == "http":
            problems.append(("http_version", "HTTP/3 needs an https:// URL (QUIC is always TLS)"))
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
        if self.bearer_token_file and not sockets.readable(self.bearer_token_file):
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


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def _in_ranges(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= status <= high for low, high in ranges)


def _wants_body(params: HttpParams, status: int) -> bool:
    """Read the body only of an answer that is judged on it: not of a redirect about to be
    followed, nor of a status that fails anyway (a 5xx stays http_status, however large)."""
    if params.follow_redirects and status in REDIRECT_STATUSES:
        return False
    return _in_ranges(status, params.status_ranges)


async def _addresses(url: URL, check: CheckSpec, env: ProbeEnv, run: ProbeRun) -> list[str]:
    """Where url's host is: an IP literal as it is, the check's own host by its override or
    our resolver, any other (a redirect's) by our resolver. Never the system's."""
    host = url.host or ""
    if is_ip_literal(host):
        env.policy.require(host, "address")
        return [host]
    params: HttpParams = check.params
    own_host = host == URL(params.url).host
    return await resolve(host, check, env, run, use_override=own_host)


async def _exchange(
    url: URL, request: curl.Request, check: CheckSpec, env: ProbeEnv, run: ProbeRun
) -> curl.Answer:
    """One hop: each address in turn, a failed connect handing over to the next one."""
    addresses = await _addresses(url, check, env, run)
    for index, address in enumerate(addresses):
        last = index == len(addresses) - 1
        try:
            return await curl.exchange(
                replace(
                    request,
                    address=address,
                    connect_timeout=None if last else sockets.share(run, len(addresses) - index),
                ),
                env.policy,
                run,
            )
        except ProbeFailure as failure:
            # The next address, if the connection never came up (a TLS timeout here is this
            # address's share of the time running out: libcurl's connect covers TLS too).
            moves_on = failure.reason.layer in (Layer.TCP, Layer.QUIC)
            if last or not (moves_on or failure.reason is Reason.TLS_TIMEOUT):
                raise
    raise AssertionError("the resolver returned no address")  # it raises instead


# Credentials go to the check's own origin only, never to where a redirect leads.
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _request_headers(params: HttpParams, url: URL, first: URL) -> tuple[str, ...]:
    headers = dict(params.headers)
    if url.origin() != first.origin():
        headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIALS}
    else:
        token = bearer_token(params)
        if token:
            headers["Authorization"] = f"Bearer {token}"
    return tuple(f"{name}: {value}" for name, value in headers.items())


async def probe_http(check: CheckSpec, env: ProbeEnv, run: ProbeRun) -> str:
    params: HttpParams = check.params
    if params.http_version == "3":
        run.timeout_reasons = QUIC_TIMEOUT_REASONS
    first = url = URL(params.url)
    method, body = params.method, params.body.encode() if params.body is not None else None
    redirects = 0
    ca_file = params.ca_file or env.ca_file
    while True:
        request = curl.Request(
            url=str(url),
            host=url.raw_host or "",
            port=url.port or 0,  # yarl gives the scheme's default port
            address="",
            method=method,
            headers=_request_headers(params, url, first),
            body=body,
            http_version=params.http_version,
            ca_file=ca_file,
            max_body_bytes=params.max_body_bytes,
            user_agent=USER_AGENT,
            wants_body=partial(_wants_body, params),
        )
        answer = await _exchange(url, request, check, env, run)
        run.facts["http_version"] = answer.http_version
        location = answer.headers.get("Location")
        if not (params.follow_redirects and answer.status in REDIRECT_STATUSES and location):
            break
        if redirects == params.max_redirects:
            raise ProbeFailure(
                Reason.HTTP_REDIRECT_LOOP, f"more than {params.max_redirects} redirects"
            )
        redirects += 1
        try:
            url = url.join(URL(location))
        except ValueError:
            raise ProbeFailure(Reason.HTTP_PROTOCOL, "redirect to an invalid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ProbeFailure(
                Reason.HTTP_PROTOCOL, f"redirect to a non-HTTP target ({url.scheme}:)"
            )
        if url.scheme == "http" and params.http_version == "3":
            raise ProbeFailure(Reason.HTTP_PROTOCOL, "redirect to plain http:// (no QUIC there)")
        if (answer.status == 303 and method != "HEAD") or (
            answer.status in (301, 302) and method == "POST"
        ):
            method, body = "GET", None  # as browsers do
    run.facts["http_status"] = answer.status
    if not _in_ranges(answer.status, params.status_ranges):
        expected = ", ".join(map(str, params.valid_status_codes))
        raise ProbeFailure(Reason.HTTP_STATUS, f"HTTP {answer.status}, expected {expected}")
    problem = judge_content(params, answer.headers, answer.body)
    if problem:
        raise ProbeFailure(Reason.CONTENT_MISMATCH, problem)
    return f"HTTP/{answer.http_version} {answer.status}, {len(answer.body)} bytes" + (
        f", {redirects} redirects" if redirects else ""
    )
