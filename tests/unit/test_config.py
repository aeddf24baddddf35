"""Config loading: every bad input gets its own clear error naming file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from exporter.config import loader
from exporter.config.loader import ConfigError
from exporter.egress import EVERYWHERE

MINIMAL = """
builtin_catalog: false
services:
  facebook:
    checks:
      web:
        kind: http
        url: https://www.facebook.com/
"""


def parse(text: str) -> loader.Config:
    return loader.parse(textwrap.dedent(text), "test.yml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return [str(p) for p in caught.value.problems]


def test_builtin_catalogue_is_valid_and_complete() -> None:
    loaded = loader.load(None)
    names = {s.name for s in loaded.meta_services}
    assert names == {
        "facebook",
        "instagram",
        "whatsapp",
        "messenger",
        "threads",
        "ads_manager",
        "facebook_login",
        "messenger_api_instagram",
        "whatsapp_business_api",
    }
    assert loaded.control is not None and len(loaded.control.checks) >= 2
    kinds = {c.kind for c in loaded.checks}
    assert kinds == {"dns", "tcp", "tls", "http"}
    facebook = loaded.service("facebook")
    auth = next(c for c in facebook.checks if c.name == "auth_dns")
    assert auth.params.mode == "authoritative"
    assert "129.134.30.12" in auth.params.nameservers
    graph = next(c for c in facebook.checks if c.name == "graph_api")
    assert graph.params.json_expect["error.code"] == 2500
    # The optional authenticated check is off by default, so no token is needed.
    assert all(c.name != "health_status" for c in loaded.checks)
    assert loaded.egress.allow == loader.EgressPolicy.from_strings(EVERYWHERE).allow


def test_minimal_config_with_defaults() -> None:
    loaded = parse(MINIMAL)
    (check,) = loaded.checks
    assert (check.service, check.name, check.kind) == ("facebook", "web", "http")
    assert (check.interval, check.timeout, check.recheck_interval) == (15.0, 5.0, 2.0)
    assert check.critical and check.ip_family == "auto"
    assert loaded.service("facebook").display_name == "Facebook"


def test_user_file_overrides_catalogue_key_by_key() -> None:
    loaded = parse(
        """
        global: {interval: 30s}
        services:
          facebook:
            checks:
              web: {timeout: 250ms}
          threads: {enabled: false}
        """
    )
    web = next(c for c in loaded.checks if c.key == ("facebook", "web"))
    assert web.timeout == 0.25 and web.interval == 30.0
    assert web.params.url == "https://www.facebook.com/"  # untouched, from the catalogue
    assert "threads" not in {s.name for s in loaded.services}


def test_ip_family_both_expands_into_two_checks() -> None:
    loaded = parse(MINIMAL.replace("kind: http", "kind: http\n        ip_family: both"))
    assert [(c.name, c.ip_family) for c in loaded.checks] == [
        ("web_ip4", "ip4"),
        ("web_ip6", "ip6"),
    ]


def test_durations_accept_units() -> None:
    loaded = parse(MINIMAL + "        interval: 100ms\n        timeout: 2m\n")
    (check,) = loaded.checks
    assert check.interval == pytest.approx(0.1) and check.timeout == 120.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "services: [a\n", "test.yml:2:1: invalid YAML: expected ',' or ']'", id="invalid-yaml"
        ),
        pytest.param(
            MINIMAL + "        tiemout: 3s\n",
            "test.yml:9:18: services.facebook.checks.web.tiemout: unknown key 'tiemout' "
            "(hint: did you mean 'timeout'?)",
            id="unknown-key",
        ),
        pytest.param(
            MINIMAL + "        max_redirects: lots\n",
            "test.yml:9:24: services.facebook.checks.web.max_redirects: expected an integer, got 'lots'",
            id="wrong-type",
        ),
        pytest.param(
            MINIMAL + "        interval: -5s\n",
            "test.yml:9:19: services.facebook.checks.web.interval: must be greater than 0",
            id="negative-interval",
        ),
        pytest.param(
            "builtin_catalog: false\nglobal:\n  interval: 0s\n",
            "test.yml:3:13: global.interval: must be greater than 0",
            id="zero-interval",
        ),
        pytest.param(
            MINIMAL.replace("kind: http", "kind: htp"),
            "test.yml:7:15: services.facebook.checks.web.kind: unknown prober kind 'htp' "
            "(hint: did you mean 'http'?",
            id="unknown-kind",
        ),
        pytest.param(
            MINIMAL + "      web:\n        kind: tcp\n",
            "test.yml:9:7: duplicate key 'web' in services.facebook.checks",
            id="duplicate-check-name",
        ),
        pytest.param(
            MINIMAL.replace("        url: https://www.facebook.com/\n", ""),
            "services.facebook.checks.web.url: missing required key 'url' (hint: add url: <a string>)",
            id="missing-required",
        ),
        pytest.param(
            MINIMAL.replace("kind: http\n", ""),
            "services.facebook.checks.web.kind: missing required key 'kind'",
            id="missing-kind",
        ),
        pytest.param(
            MINIMAL + "        url: ftp://x/\n",
            "duplicate key 'url'",
            id="duplicate-key",
        ),
        pytest.param(
            MINIMAL.replace("https://www.facebook.com/", "ftp://www.facebook.com/"),
            "services.facebook.checks.web.url: 'ftp://www.facebook.com/' is not an http:// or https:// URL",
            id="bad-url",
        ),
        pytest.param(
            MINIMAL + "        valid_status_codes: [2xx, 9zz]\n",
            "valid_status_codes[1]: '9zz' is not a status code",
            id="bad-status-spec",
        ),
        pytest.param(
            MINIMAL + "        body_regex: '('\n",
            "body_regex: invalid regular expression",
            id="bad-regex",
        ),
        pytest.param(
            "builtin_catalog: false\negress:\n  allow_networks: [10.0.0.0/33]\n",
            "test.yml:3:20: egress.allow_networks[0]: '10.0.0.0/33' is not a network",
            id="bad-network",
        ),
        pytest.param(
            "builtin_catalog: false\ndns:\n  resolvers: [dns.google]\n",
            "dns.resolvers[0]: 'dns.google' is not an IP address",
            id="resolver-not-ip",
        ),
        pytest.param(
            MINIMAL.replace("web:", "Web-Check:"),
            "check name 'Web-Check' must be lower_snake_case",
            id="bad-check-name",
        ),
        pytest.param(
            "builtin_catalog: false\nservices:\n  control:\n    checks: {}\n",
            "'control' is reserved for the control checks",
            id="reserved-service-name",
        ),
        pytest.param(
            "builtin_catalog: false\nglobl: {}\n",
            "test.yml:2:8: globl: unknown key 'globl' (hint: did you mean 'global'?)",
            id="unknown-top-level",
        ),
        pytest.param(
            "builtin_catalog: maybe\n",
            "builtin_catalog: expected true or false",
            id="builtin-catalog-type",
        ),
        pytest.param(
            MINIMAL + "        ip_family: both\n        resolve_to: [127.0.0.1]\n",
            "resolve_to: ip_family both needs resolve_to addresses of both families",
            id="both-families-one-override",
        ),
        pytest.param(
            MINIMAL + "        ca_file: /nonexistent/ca.pem\n",
            "services.facebook.checks.web.ca_file: cannot read CA bundle /nonexistent/ca.pem",
            id="unreadable-ca-file",
        ),
        pytest.param(
            "- a\n- b\n",
            "the top level must be a mapping",
            id="top-level-list",
        ),
        pytest.param(
            "builtin_catalog: false\nservices:\n  facebook:\n    checks:\n      d:\n        kind: dns\n"
            "        name: facebook.com\n        mode: authoritative\n",
            "nameservers: authoritative mode needs at least one nameserver",
            id="authoritative-without-nameservers",
        ),
    ],
)
def test_bad_config_is_reported_with_location(text: str, expected: str) -> None:
    found = errors(text)
    assert any(expected in line for line in found), found


def test_all_problems_are_reported_at_once() -> None:
    found = errors(
        MINIMAL + "        tiemout: 3s\n        interval: soon\n        critical: maybe\n"
    )
    assert len(found) == 3, found


def test_problem_in_catalogue_value_overridden_by_user_is_blamed_on_user_file() -> None:
    found = errors("services:\n  facebook:\n    checks:\n      web:\n        timeout: soon\n")
    assert found == [
        "test.yml:5:18: services.facebook.checks.web.timeout: expected a duration like 15s, 250ms or 2m, "
        "got 'soon'"
    ]


def test_token_env_must_be_set_only_when_check_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    enable = (
        "services:\n  whatsapp_business_api:\n    checks:\n      health_status: {enabled: true}\n"
    )
    monkeypatch.delenv("META_WHATSAPP_TOKEN", raising=False)
    found = errors(enable)
    assert any("environment variable META_WHATSAPP_TOKEN is empty or unset" in f for f in found)
    monkeypatch.setenv("META_WHATSAPP_TOKEN", "EAAB-secret-token")
    loaded = parse(enable)
    assert any(c.name == "health_status" for c in loaded.checks)


def test_unreadable_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        loader.load(str(tmp_path / "missing.yml"))


def test_command_line_overrides_replace_egress_and_resolvers() -> None:
    loaded = loader.with_overrides(
        parse(MINIMAL), allow=["127.0.0.0/8"], resolvers=["127.0.0.1:5353"]
    )
    assert loaded.egress.permits("127.0.0.1") and not loaded.egress.permits("157.240.1.35")
    assert [str(r) for r in loaded.resolvers] == ["127.0.0.1:5353"]


H3_CONTROL = """
control:
  checks:
    by_ip:
      kind: http
      url: https://192.0.2.1/
"""


def test_an_http3_check_needs_an_http3_control_check() -> None:
    """Without one, a network that drops UDP 443 would read as Meta's QUIC failing."""
    h3 = MINIMAL + '        http_version: "3"\n'
    found = errors(h3 + H3_CONTROL)
    assert any(
        "services.facebook.checks.web.http_version" in line and "HTTP/3 control check" in line
        for line in found
    ), found
    with_quic_control = (
        H3_CONTROL
        + '    quic:\n      kind: http\n      url: https://192.0.2.2/\n      http_version: "3"\n'
    )
    assert parse(h3 + with_quic_control).control is not None
    assert parse(h3).control is None  # no control checks at all: nothing vouches, no rule


def test_control_checks_cannot_all_be_http3() -> None:
    only_quic = (
        MINIMAL
        + "control:\n  checks:\n    quic:\n      kind: http\n      url: https://192.0.2.2/\n"
        + '      http_version: "3"\n'
    )
    found = errors(only_quic)
    assert any("every control check is over HTTP/3" in line for line in found), found
