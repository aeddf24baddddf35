"""Config fuzzing: random YAML never crashes the validator.

`exporter.config.loader.parse` must either return a Config or raise ConfigError whose every problem
names file:line:column; any other exception is a bug. Documents are built from the config's
real keys (so the fuzzer gets deep into sections, checks and prober params) mixed with random
keys and values, plus raw random text. Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import dataclasses
import re

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter.config import loader
from exporter.probes import REGISTRY

FILE = "fuzz.yml"
POSITION = re.compile(r"^(fuzz\.yml|<built-in catalog\.yaml>):\d+:\d+: ")

REAL_KEYS = sorted(
    {
        *loader._TOP_KEYS,
        *(f.name for cls in loader._TOP_SECTIONS.values() for f in dataclasses.fields(cls)),
        *(f.name for f in dataclasses.fields(loader.CheckCommon)),
        *(f.name for f in dataclasses.fields(loader.ServiceSection)),
        *(f.name for kind in REGISTRY.values() for f in dataclasses.fields(kind.params)),
        *(f.name for f in dataclasses.fields(loader.BgpSection)),
        *(f.name for f in dataclasses.fields(loader.OfficialStatusSection)),
        "facebook",
        "web",
        "control",
    }
)
FUZZ = settings(
    max_examples=250,
    deadline=None,  # the shared CI machine's speed is not under test
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values that have tripped validators before (or plausibly could), offered often.
TRAPS = [
    "15s", "-1s", "0", "250ms", "1h", "2xx", "<500", "999", "http", "dns", "tcp", "tls",
    "https://x.test/", "::1", "127.0.0.1:53", "10.0.0.0/8", "ip4", "both", "A", "(", "\0",
    "a{99999999999999}", "http://[::1", "/etc/passwd\0", "ws://", "TLSv1.3", "authoritative",
]  # fmt: skip
keys = st.sampled_from(REAL_KEYS) | st.text(max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(TRAPS)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
check = st.builds(
    lambda kind, rest: {**rest, "kind": kind},
    st.sampled_from([*REGISTRY, "htp"]),
    st.dictionaries(st.sampled_from(REAL_KEYS), scalars | values, max_size=8),
) | st.dictionaries(keys, values, max_size=6)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "builtin_catalog": st.booleans() | scalars,
        "global": st.dictionaries(keys, values, max_size=5),
        "services": st.dictionaries(
            st.sampled_from(["facebook", "instagram", "x", "Bad-Name", "control"]) | keys,
            st.fixed_dictionaries({"checks": st.dictionaries(keys, check, max_size=3)}) | values,
            max_size=3,
        ),
        "control": st.fixed_dictionaries({"checks": st.dictionaries(keys, check, max_size=2)}),
        "feeds": values,
        "hosts": values,
        "egress": values,
        "dns": values,
        "tls": values,
    },
)


def assert_parses_or_explains(text: str) -> None:
    try:
        loader.parse(text, FILE)
    except loader.ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.position.line >= 1 and problem.position.column >= 1
            assert POSITION.match(str(problem)), str(problem)


def _check(**raw: object) -> dict:
    return {"builtin_catalog": False, "services": {"x": {"checks": {"a": raw}}}}


@FUZZ
@given(document=shaped)
# Crashes the fuzzer found, kept as fixed examples: each was an uncaught exception.
@example(document=_check(kind=["http"]))  # TypeError: unhashable kind
@example(document=_check(kind="http", url="http://[::1"))  # ValueError from yarl
@example(document=_check(kind="http", url="https://a/", body_regex="a{99999999999999}"))
@example(document=_check(kind="dns", name="a", answer_regex="a{99999999999999}"))
@example(document=_check(kind="tls", host="a", ca_file="\0"))  # embedded null byte
@example(document=_check(kind="http", url="https://a/", bearer_token_file="/t\0"))
@example(document={"tls": {"ca_file": "\0"}})
def test_shaped_documents(document: dict) -> None:
    assert_parses_or_explains(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(document=st.dictionaries(keys, values, max_size=8))
def test_random_mappings(document: dict) -> None:
    assert_parses_or_explains(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(text=st.text(max_size=200) | st.from_regex(r"[\[\]{}:,\-#&*!|>'\"%@` \n\ta-z0-9]{0,80}"))
def test_raw_text(text: str) -> None:
    assert_parses_or_explains(text)
