"""Configuration: YAML (the built-in catalogue, overlaid by the user's file) -> frozen Config.

Pure apart from reading the two files. Every problem is reported with file:line:column,
the key path, and a hint; all problems at once, not the first only.

Shape (see docs/configuration.md, "Configuration reference"):

    builtin_catalog: true        # false: start from an empty catalogue
    global:   {interval, timeout, recheck_interval, confirm_failures, jitter,
               max_concurrency, latency_threshold, ip_family}
    dns:      {resolvers: [ip[:port]...], timeout}
    egress:   {allow_networks: [cidr...], deny_networks: [cidr...]}
    tls:      {ca_file}
    hosts:    {hostname: [ip...]}
    services: {name: {display_name, description, enabled, latency_threshold,
                      status_orgs: [org...], dns_prefixes: [cidr...], checks: {name: check}}}
    control:  {checks: {name: check}}     # non-Meta targets: "is it us?"
    feeds:    {official_status: {enabled, url, interval, timeout},
               bgp: {enabled, url, prefixes, min_peers, withdrawn_ratio, connect_timeout,
                     reconnect_max, seed: {enabled, url}, baseline: {enabled, url, interval}}}

A user file is merged over the catalogue key by key, so `services.facebook.checks.web.timeout: 10s`
changes one value and `enabled: false` removes a check or a service.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path as FsPath
from typing import Any, Literal

from exporter.egress import EgressPolicy, parse_networks
from exporter.net.resolver import parse_endpoint
from exporter.probes import REGISTRY
from exporter.probes.sockets import ca_file_problem
from exporter.spec import (
    CONTROL_SERVICE,
    BgpFeed,
    CheckSpec,
    Config,
    Endpoint,
    OfficialStatusFeed,
    ServiceSpec,
    Settings,
)

from . import yamlsource
from .schema import Builder, Duration, Problem, format_path
from .yamlsource import Document, Path, Position

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
CATALOG_FILE = "catalog.yaml"


@dataclass(frozen=True, slots=True)
class GlobalSection:
    interval: Duration = 15.0
    timeout: Duration = 5.0
    recheck_interval: Duration = 2.0
    confirm_failures: int = 2
    jitter: float = 0.1
    max_concurrency: int = 32
    latency_threshold: Duration = 3.0
    ip_family: Literal["auto", "ip4", "ip6", "both"] = "auto"

    def check(self) -> list[tuple[str, str]]:
        problems = [
            (name, "must be greater than 0")
            for name in ("interval", "timeout", "recheck_interval", "latency_threshold")
            if getattr(self, name) <= 0
        ]
        if self.confirm_failures < 1:
            problems.append(("confirm_failures", "must be 1 or more (1 = no re-check)"))
        if not 0 <= self.jitter < 1:
            problems.append(("jitter", "must be a fraction of the interval, 0 <= jitter < 1"))
        if self.max_concurrency < 1:
            problems.append(("max_concurrency", "must be 1 or more"))
        return problems


@dataclass(frozen=True, slots=True)
class DnsSection:
    resolvers: tuple[str, ...] = ()
    # Wait per attempt at one server; the check's timeout bounds the whole lookup.
    timeout: Duration = 1.0

    def check(self) -> list[tuple[str, str]]:
        problems = []
        for index, text in enumerate(self.resolvers):
            try:
                parse_endpoint(text)
            except ValueError as exc:
                problems.append((f"resolvers[{index}]", str(exc)))
        if self.timeout <= 0:
            problems.append(("timeout", "must be greater than 0"))
        return problems


@dataclass(frozen=True, slots=True)
class EgressSection:
    allow_networks: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    deny_networks: tuple[str, ...] = ()

    def check(self) -> list[tuple[str, str]]:
        problems = []
        for key in ("allow_networks", "deny_networks"):
            for index, text in enumerate(getattr(self, key)):
                try:
                    parse_networks([text])
                except ValueError as exc:
                    problems.append((f"{key}[{index}]", str(exc)))
        return problems


@dataclass(frozen=True, slots=True)
class TlsSection:
    ca_file: str | None = None

    def check(self) -> list[tuple[str, str]]:
        return ca_file_problem(self.ca_file)


def _url_problem(url: str, schemes: tuple[str, ...]) -> list[tuple[str, str]]:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in schemes or not url.split("://", 1)[1].split("/", 1)[0]:
        return [("url", f"{url!r} must be an absolute {' or '.join(schemes)} URL")]
    return []


def _network_problems(key: str, texts: tuple[str, ...]) -> list[tuple[str, str]]:
    problems = []
    for index, text in enumerate(texts):
        try:
            ipaddress.ip_network(text)
        except ValueError as exc:
            problems.append((f"{key}[{index}]", f"{text!r} is not a prefix: {exc}"))
    return problems


@dataclass(frozen=True, slots=True)
class OfficialStatusSection:
    enabled: bool = False
    url: str = "https://metastatus.com/data/orgs.json"
    interval: Duration = 60.0
    timeout: Duration = 10.0

    def check(self) -> list[tuple[str, str]]:
        problems = _url_problem(self.url, ("http", "https"))
        problems += [
            (n, "must be greater than 0") for n in ("interval", "timeout") if getattr(self, n) <= 0
        ]
        return problems


@dataclass(frozen=True, slots=True)
class BaselineSection:
    enabled: bool = False
    url: str = "https://stat.ripe.net/data/routing-status/data.json"
    interval: Duration = 3600.0

    def check(self) -> list[tuple[str, str]]:
        problems = _url_problem(self.url, ("http", "https"))
        if self.interval < 60:
            problems.append(("interval", "must be 60s or more (RIPEstat is a slow baseline)"))
        return problems


@dataclass(frozen=True, slots=True)
class SeedSection:
    enabled: bool = False
    url: str = "https://stat.ripe.net/data/looking-glass/data.json"

    def check(self) -> list[tuple[str, str]]:
        return _url_problem(self.url, ("http", "https"))


@dataclass(frozen=True, slots=True)
class BgpSection:
    enabled: bool = False
    url: str = "wss://ris-live.ripe.net/v1/ws/?client=meta-outage-exporter"
    # Watched for visibility only, besides the services' dns_prefixes.
    prefixes: tuple[str, ...] = ()
    min_peers: int = 10
    withdrawn_ratio: float = 0.5
    connect_timeout: Duration = 10.0
    reconnect_max: Duration = 60.0
    seed: SeedSection = field(default_factory=SeedSection)
    baseline: BaselineSection = field(default_factory=BaselineSection)

    def check(self) -> list[tuple[str, str]]:
        problems = _url_problem(self.url, ("ws", "wss"))
        problems += _network_problems("prefixes", self.prefixes)
        if self.min_peers < 1:
            problems.append(("min_peers", "must be 1 or more"))
        if not 0 < self.withdrawn_ratio < 1:
            problems.append(("withdrawn_ratio", "must be a fraction, 0 < withdrawn_ratio < 1"))
        problems += [
            (n, "must be greater than 0")
            for n in ("connect_timeout", "reconnect_max")
            if getattr(self, n) <= 0
        ]
        return problems


@dataclass(frozen=True, slots=True)
class FeedsSection:
    official_status: OfficialStatusSection = field(default_factory=OfficialStatusSection)
    bgp: BgpSection = field(default_factory=BgpSection)


@dataclass(frozen=True, slots=True)
class CheckCommon:
    """Keys every check has, whatever its kind."""

    kind: str
    enabled: bool = True
    description: str = ""
    interval: Duration | None = None
    timeout: Duration | None = None
    recheck_interval: Duration | None = None
    # The service is down only when all its critical checks fail.
    critical: bool = True
    ip_family: Literal["auto", "ip4", "ip6", "both"] | None = None
    latency_threshold: Duration | None = None
    resolve_to: tuple[str, ...] = ()

    def check(self) -> list[tuple[str, str]]:
        problems = [
            (name, "must be greater than 0")
            for name in ("interval", "timeout", "recheck_interval", "latency_threshold")
            if getattr(self, name) is not None and getattr(self, name) <= 0
        ]
        for index, address in enumerate(self.resolve_to):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                problems.append((f"resolve_to[{index}]", f"{address!r} is not an IP address"))
        return problems


@dataclass(frozen=True, slots=True)
class ServiceSection:
    checks: Mapping[str, Any] = field(default_factory=dict)
    display_name: str | None = None
    description: str = ""
    enabled: bool = True
    latency_threshold: Duration | None = None
    status_orgs: tuple[str, ...] = ()
    dns_prefixes: tuple[str, ...] = ()

    def check(self) -> list[tuple[str, str]]:
        return _network_problems("dns_prefixes", self.dns_prefixes)


_COMMON_KEYS = frozenset(f.name for f in dataclasses.fields(CheckCommon))
_TOP_SECTIONS: dict[str, type] = {
    "global": GlobalSection,
    "dns": DnsSection,
    "egress": EgressSection,
    "tls": TlsSection,
    "feeds": FeedsSection,
}
_TOP_KEYS = (*_TOP_SECTIONS, "builtin_catalog", "hosts", "services", "control")


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    position: Position
    path: Path
    message: str
    hint: str = ""

    def __str__(self) -> str:
        hint = f" (hint: {self.hint})" if self.hint else ""
        where = f"{format_path(self.path)}: " if self.path else ""
        return f"{self.position}: {where}{self.message}{hint}"


class ConfigError(Exception):
    """Invalid configuration; str() lists every problem, one per line, file:line:col first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def merge(base: Any, overlay: Any) -> Any:
    """Overlay wins; mappings merge key by key; anything else is replaced whole."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return overlay


class _Compiler:
    """Walks the merged data once, building specs and collecting problems."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.builder = Builder()

    def section(self, key: str) -> Any:
        cls = _TOP_SECTIONS[key]
        raw = self.data.get(key) or {}
        return self.builder.build(cls, raw, (key,)) or cls()

    def hosts(self) -> dict[str, tuple[str, ...]]:
        raw = self.data.get("hosts") or {}
        if not isinstance(raw, Mapping):
            self.builder.fail(("hosts",), "expected a mapping of hostname -> [addresses]")
            return {}
        table = {}
        for host, addresses in raw.items():
            value = self.builder.value(
                tuple[str, ...],
                addresses if isinstance(addresses, list) else [addresses],
                ("hosts", host),
            )
            for index, address in enumerate(value or ()):
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    self.builder.fail(("hosts", host, index), f"{address!r} is not an IP address")
            table[host] = tuple(value or ())
        return table

    def check(
        self,
        service: str,
        name: str,
        raw: Any,
        path: Path,
        defaults: GlobalSection,
        service_latency: float | None,
    ) -> list[CheckSpec]:
        if not NAME_RE.match(name):
            self.builder.fail(path, f"check name {name!r} must be lower_snake_case (a-z, 0-9, _)")
            return []
        if not isinstance(raw, Mapping):
            self.builder.fail(path, f"expected a mapping describing the check, got {raw!r}")
            return []
        kind = raw.get("kind")
        if kind is None:
            self.builder.fail(
                (*path, "kind"), "missing required key 'kind'", "one of " + ", ".join(REGISTRY)
            )
            return []
        if not isinstance(kind, str) or kind not in REGISTRY:
            close = difflib.get_close_matches(str(kind), list(REGISTRY), n=1)
            hint = (
                (f"did you mean {close[0]!r}? " if close else "")
                + "known kinds: "
                + ", ".join(REGISTRY)
            )
            shown = repr(kind) if isinstance(kind, str) else "a " + type(kind).__name__
            self.builder.fail((*path, "kind"), f"unknown prober kind {shown}", hint)
            return []
        params_cls = REGISTRY[kind].params
        param_keys = {f.name for f in dataclasses.fields(params_cls)}
        common = self.builder.build(CheckCommon, raw, path, ignore=frozenset(param_keys))
        if common is None or not common.enabled:
            # A disabled check is not validated further: it may name a token that is not set.
            return []
        params = self.builder.build(
            params_cls, {k: v for k, v in raw.items() if k in param_keys}, path
        )
        if params is None:
            return []
        family = common.ip_family or defaults.ip_family
        families = ("ip4", "ip6") if family == "both" else (family,)
        if family == "both" and common.resolve_to:
            given = {"ip6" if ":" in a else "ip4" for a in common.resolve_to}
            if given != {"ip4", "ip6"}:
                self.builder.fail(
                    (*path, "resolve_to"),
                    "ip_family both needs resolve_to addresses of both families",
                    "add an IPv4 and an IPv6 address, or pin ip_family",
                )
                return []
        specs = []
        for one in families:
            specs.append(
                CheckSpec(
                    service=service,
                    name=name if len(families) == 1 else f"{name}_{one}",
                    kind=kind,
                    params=params,
                    interval=common.interval or defaults.interval,
                    timeout=common.timeout or defaults.timeout,
                    recheck_interval=common.recheck_interval or defaults.recheck_interval,
                    critical=common.critical,
                    ip_family=one,  # type: ignore[arg-type]
                    latency_threshold=common.latency_threshold
                    or service_latency
                    or defaults.latency_threshold,
                    resolve_to=common.resolve_to,
                    description=common.description,
                )
            )
        return specs

    def service(
        self, name: str, raw: Any, path: Path, defaults: GlobalSection, is_control: bool
    ) -> ServiceSpec | None:
        if not NAME_RE.match(name):
            self.builder.fail(path, f"service name {name!r} must be lower_snake_case (a-z, 0-9, _)")
            return None
        section = self.builder.build(ServiceSection, raw if raw is not None else {}, path)
        if section is None or not section.enabled:
            return None
        if not isinstance(section.checks, Mapping):
            return None
        checks: list[CheckSpec] = []
        for check_name, check_raw in section.checks.items():
            checks.extend(
                self.check(
                    name,
                    check_name,
                    check_raw,
                    (*path, "checks", check_name),
                    defaults,
                    section.latency_threshold,
                )
            )
        seen: set[str] = set()
        for spec in checks:
            if spec.name in seen:
                self.builder.fail(
                    (*path, "checks", spec.name),
                    f"duplicate check name {spec.name!r} (after ip_family: both expansion)",
                )
            seen.add(spec.name)
        if not checks:
            return None
        return ServiceSpec(
            name=name,
            display_name=section.display_name or name.replace("_", " ").title(),
            checks=tuple(checks),
            is_control=is_control,
            description=section.description,
            status_orgs=section.status_orgs,
            dns_prefixes=tuple(str(ipaddress.ip_network(p)) for p in section.dns_prefixes),
        )

    def compile(self, source: str) -> Config:
        for key in self.data:
            if key not in _TOP_KEYS:
                close = difflib.get_close_matches(key, _TOP_KEYS, n=1)
                self.builder.fail(
                    (key,),
                    f"unknown key {key!r}",
                    f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(_TOP_KEYS),
                )
        defaults: GlobalSection = self.section("global")
        dns: DnsSection = self.section("dns")
        egress: EgressSection = self.section("egress")
        tls: TlsSection = self.section("tls")
        hosts = self.hosts()
        services: list[ServiceSpec] = []
        raw_services = self.data.get("services") or {}
        if not isinstance(raw_services, Mapping):
            self.builder.fail(("services",), "expected a mapping of service name -> service")
            raw_services = {}
        for name, raw in raw_services.items():
            if name == CONTROL_SERVICE:
                self.builder.fail(
                    ("services", name),
                    f"{name!r} is reserved for the control checks",
                    "put non-Meta checks under the top-level 'control:' key",
                )
                continue
            spec = self.service(name, raw, ("services", name), defaults, is_control=False)
            if spec is not None:
                services.append(spec)
        if self.data.get("control") is not None:
            control = self.service(
                CONTROL_SERVICE, self.data["control"], ("control",), defaults, is_control=True
            )
            if control is not None:
                services.append(control)
                self._check_quic_control(control, services)
        feeds: FeedsSection = self.section("feeds")
        if self.builder.problems:
            raise _Unlocated(self.builder.problems)
        return Config(
            settings=Settings(defaults.confirm_failures, defaults.jitter, defaults.max_concurrency),
            egress=EgressPolicy.from_strings(egress.allow_networks, egress.deny_networks),
            resolvers=tuple(parse_endpoint(r) for r in dns.resolvers),
            dns_timeout=dns.timeout,
            hosts=hosts,
            ca_file=tls.ca_file,
            services=tuple(services),
            source=source,
            official_status=_official_feed(feeds.official_status),
            bgp=_bgp_feed(feeds.bgp, services),
        )

    def _check_quic_control(self, control: ServiceSpec, services: list[ServiceSpec]) -> None:
        """With control checks, a Meta HTTP/3 check needs an HTTP/3 control check (else a
        network that drops UDP 443 reads as Meta's QUIC failing), and the control checks
        need one not over HTTP/3 (else nothing vouches for the uplink itself)."""
        if not control.checks:
            return
        if all(c.over_quic for c in control.checks):
            self.builder.fail(
                ("control", "checks"),
                "every control check is over HTTP/3: nothing vouches for this vantage's uplink",
                "add a DNS or an HTTP/1.1 / HTTP/2 control check",
            )
        if any(c.over_quic for c in control.checks):
            return
        for service in services:
            for check in service.checks:
                if check.over_quic and not service.is_control:
                    self.builder.fail(
                        ("services", service.name, "checks", check.name, "http_version"),
                        "an HTTP/3 check needs an HTTP/3 control check: without one, a network "
                        "that drops UDP 443 would read as Meta's QUIC failing",
                        'add a control check with http_version: "3" (the catalogue has two)',
                    )


def _official_feed(section: OfficialStatusSection) -> OfficialStatusFeed | None:
    if not section.enabled:
        return None
    return OfficialStatusFeed(section.url, section.interval, section.timeout)


def _bgp_feed(section: BgpSection, services: list[ServiceSpec]) -> BgpFeed | None:
    if not section.enabled:
        return None
    watched = [p for s in services for p in s.dns_prefixes]
    watched += [str(ipaddress.ip_network(p)) for p in section.prefixes]
    return BgpFeed(
        url=section.url,
        prefixes=tuple(dict.fromkeys(watched)),
        min_peers=section.min_peers,
        withdrawn_ratio=section.withdrawn_ratio,
        connect_timeout=section.connect_timeout,
        reconnect_max=section.reconnect_max,
        seed_url=section.seed.url if section.seed.enabled else None,
        baseline_url=section.baseline.url if section.baseline.enabled else None,
        baseline_interval=section.baseline.interval,
    )


class _Unlocated(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems


def catalog_text() -> str:
    return resources.files(__package__).joinpath(CATALOG_FILE).read_text()


def parse(text: str, file: str, *, catalog: str | None = None) -> Config:
    """A Config from the user's YAML text over the built-in catalogue. Raises ConfigError."""
    documents: list[Document] = []
    try:
        user = yamlsource.load(text, file)
        if not isinstance(user.data, dict):
            raise ConfigError(
                [
                    ConfigProblem(
                        yamlsource.Position(file, 1, 1), (), "the top level must be a mapping"
                    )
                ]
            )
        use_catalog = user.data.get("builtin_catalog", True)
        if use_catalog is True:
            documents.append(
                yamlsource.load(
                    catalog if catalog is not None else catalog_text(), f"<built-in {CATALOG_FILE}>"
                )
            )
        elif use_catalog is not False:
            raise ConfigError(
                [
                    ConfigProblem(
                        user.position(("builtin_catalog",)),
                        ("builtin_catalog",),
                        f"expected true or false, got {use_catalog!r}",
                    )
                ]
            )
        documents.append(user)
    except yamlsource.YamlSyntaxError as exc:
        raise ConfigError([ConfigProblem(exc.position, (), exc.message)]) from None
    merged: dict[str, Any] = {}
    for document in documents:
        merged = merge(merged, document.data)
    try:
        return _Compiler(merged).compile(file)
    except _Unlocated as exc:
        raise ConfigError([_locate(p, documents) for p in exc.problems]) from None


def _locate(problem: Problem, documents: list[Document]) -> ConfigProblem:
    """Blame the last document (the user's) that mentions the path, else the catalogue."""
    for document in reversed(documents):
        for cut in range(len(problem.path), 0, -1):
            if problem.path[:cut] in document.positions:
                return ConfigProblem(
                    document.positions[problem.path[:cut]],
                    problem.path,
                    problem.message,
                    problem.hint,
                )
    return ConfigProblem(documents[-1].position(()), problem.path, problem.message, problem.hint)


def load(path: str | None) -> Config:
    """The config from a file (None: the built-in catalogue alone). Raises ConfigError."""
    if path is None:
        return parse("", "<no config file>")
    try:
        text = FsPath(path).read_text()
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(Position(path, 1, 1), (), f"cannot read config file: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            [ConfigProblem(Position(path, 1, 1), (), "config file is not UTF-8 text")]
        ) from None
    return parse(text, path)


def with_overrides(
    config: Config,
    *,
    allow: list[str] | None = None,
    deny: list[str] | None = None,
    resolvers: list[str] | None = None,
) -> Config:
    """Command-line flags win over the file (e.g. --egress.allow-network=127.0.0.0/8)."""
    egress = config.egress
    if allow is not None or deny is not None:
        egress = EgressPolicy(
            parse_networks(allow) if allow is not None else config.egress.allow,
            parse_networks(deny) if deny is not None else config.egress.deny,
        )
    servers: tuple[Endpoint, ...] = config.resolvers
    if resolvers:
        servers = tuple(parse_endpoint(r) for r in resolvers)
    return dataclasses.replace(config, egress=egress, resolvers=servers)
