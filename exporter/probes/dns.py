"""DNS prober: recursive lookups through the resolvers, or questions to authoritative servers.

Authoritative mode asks every listed nameserver directly (RD=0), concurrently, and needs
all of them to answer authoritatively: on 4 Oct 2021 these were the first to go, while
recursive resolvers still answered from cache.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Literal

import dns.rcode
import dns.rdatatype

from exporter.model import Phase, Reason
from exporter.net import dnsclient
from exporter.net.resolver import is_ip_literal, parse_endpoint
from exporter.spec import CheckSpec, Endpoint

from .base import ProbeEnv, ProbeFailure, ProbeRun


@dataclass(frozen=True, slots=True)
class DnsParams:
    name: str
    type: str = "A"
    mode: Literal["recursive", "authoritative"] = "recursive"
    # Authoritative mode: IPs (optionally :port) or names resolved through the resolvers.
    nameservers: tuple[str, ...] = ()
    transport: Literal["udp", "tcp"] = "udp"
    expect_rcode: str = "NOERROR"
    min_answers: int = 1
    # At least one answer record (its text, e.g. "157.240.1.35") must match.
    answer_regex: str | None = None
    # Default: required in authoritative mode, ignored in recursive mode.
    require_authoritative: bool | None = None

    def check(self) -> list[tuple[str, str]]:
        problems = []
        try:
            dns.rdatatype.from_text(self.type)
        except dns.rdatatype.UnknownRdatatype:
            problems.append(("type", f"unknown DNS record type {self.type!r}"))
        try:
            dns.rcode.from_text(self.expect_rcode)
        except dns.rcode.UnknownRcode:
            problems.append(("expect_rcode", f"unknown rcode {self.expect_rcode!r}"))
        if self.mode == "authoritative" and not self.nameservers:
            problems.append(("nameservers", "authoritative mode needs at least one nameserver"))
        if self.mode == "recursive" and self.nameservers:
            problems.append(("nameservers", "only for mode: authoritative"))
        if self.min_answers < 0:
            problems.append(("min_answers", "must be 0 or more"))
        for index, server in enumerate(self.nameservers):
            if ":" in server and not _looks_like_endpoint(server):
                problems.append(
                    (f"nameservers[{index}]", f"{server!r} is not an IP[:port] or a name")
                )
        if self.answer_regex is not None:
            try:
                re.compile(self.answer_regex)
            except (re.error, OverflowError) as exc:  # a{99999999999}: OverflowError
                problems.append(("answer_regex", f"invalid regular expression: {exc}"))
        return problems

    @property
    def authoritative_required(self) -> bool:
        if self.require_authoritative is None:
            return self.mode == "authoritative"
        return self.require_authoritative


def _looks_like_endpoint(text: str) -> bool:
    try:
        parse_endpoint(text)
    except ValueError:
        return False
    return True


def judge(answer: dnsclient.Answer, params: DnsParams, name: str) -> tuple[Reason, str, int]:
    """Pure: does this answer satisfy the check? (reason, detail, answer count)."""
    found = dnsclient.records(answer, params.type)
    rcode = answer.rcode
    if rcode != params.expect_rcode.upper():
        failure = dnsclient.failure_for_rcode(answer, name)
        reason = failure.reason if failure else Reason.DNS_ANSWER_MISMATCH
        return (
            reason,
            f"{answer.server} answered {rcode}, expected {params.expect_rcode}",
            len(found),
        )
    if params.authoritative_required and not answer.authoritative:
        return (
            Reason.DNS_NOT_AUTHORITATIVE,
            f"{answer.server} answered without the AA flag",
            len(found),
        )
    if len(found) < params.min_answers:
        return (
            Reason.DNS_NO_ANSWER,
            f"{answer.server} gave {len(found)} {params.type} records, "
            f"expected {params.min_answers}+",
            len(found),
        )
    if params.answer_regex and not any(re.search(params.answer_regex, r) for r in found):
        return (
            Reason.DNS_ANSWER_MISMATCH,
            f"no {params.type} record matches {params.answer_regex!r}",
            len(found),
        )
    return Reason.OK, f"{answer.server} {rcode}, {len(found)} {params.type}", len(found)


async def _nameserver_endpoints(
    params: DnsParams, check: CheckSpec, env: ProbeEnv, deadline: float
) -> list[Endpoint]:
    endpoints: list[Endpoint] = []
    for server in params.nameservers:
        if is_ip_literal(server.strip("[]")) or _looks_like_endpoint(server):
            endpoints.append(parse_endpoint(server))
            continue
        for address in await env.resolver.resolve(server, check.ip_family, deadline=deadline):
            endpoints.append(Endpoint(address, 53))
            break  # one address per named server: it is one server
    return endpoints


async def _ask(
    name: str,
    params: DnsParams,
    servers: list[Endpoint],
    env: ProbeEnv,
    deadline: float,
    *,
    authoritative: bool,
) -> dnsclient.Answer:
    return await dnsclient.query(
        name,
        params.type,
        servers,
        env.policy,
        deadline=deadline,
        what="nameserver" if authoritative else "resolver",
        recursion_desired=not authoritative,
        use_tcp=params.transport == "tcp",
        attempt_timeout=env.resolver.attempt_timeout,
    )


async def probe_dns(check: CheckSpec, env: ProbeEnv, run: ProbeRun) -> str:
    params: DnsParams = check.params
    deadline = time.monotonic() + check.timeout
    with run.clock.phase(Phase.RESOLVE):
        if params.mode == "recursive":
            answers = [
                await _ask(
                    params.name,
                    params,
                    list(env.resolver.servers),
                    env,
                    deadline,
                    authoritative=False,
                )
            ]
        else:
            servers = await _nameserver_endpoints(params, check, env, deadline)
            for server in servers:
                env.policy.require(server.host, "nameserver")
            # A TaskGroup, not gather: one nameserver failing must cancel the others'
            # queries, never leave them running past the probe.
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(
                            _ask(params.name, params, [s], env, deadline, authoritative=True)
                        )
                        for s in servers
                    ]
            except ExceptionGroup as failures:
                raise failures.exceptions[0] from None  # report the first nameserver's failure
            answers = [task.result() for task in tasks]
    verdicts = [judge(answer, params, params.name) for answer in answers]
    run.facts["dns_rcode"] = answers[0].rcode
    run.facts["dns_answers"] = verdicts[0][2]
    for reason, detail, count in verdicts:
        if reason is not Reason.OK:
            raise ProbeFailure(reason, detail, dns_answers=count)
    return "; ".join(detail for _, detail, _ in verdicts)
