"""A small Dockerfile reader: the instructions our Dockerfile uses, split into stages.

Only what the tests need: continuation lines, comments, `FROM ... AS name`, RUN with leading
`--mount=` flags, ENV/LABEL key=value pairs, COPY, and the JSON (exec) forms of ENTRYPOINT,
CMD and HEALTHCHECK CMD. Anything else is kept as raw text.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuations joined
    line: int  # 1-based line of the instruction's first physical line


@dataclasses.dataclass(frozen=True)
class Mount:
    kind: str
    source: str
    target: str
    from_stage: str | None


@dataclasses.dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def instructions(text: str) -> list[Instruction]:
    """Logical lines: comments and blank lines dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        line = " ".join(p for p in parts if p)
        keyword, _, args = line.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    if parts:
        raise ValueError(f"line {start}: continuation at end of file")
    return out


def stages(text: str) -> list[Stage]:
    """The stages, each FROM's image with the ARG defaults declared before the first FROM
    substituted (`ARG BASE=python:3.11-slim-bookworm` then `FROM ${BASE}`)."""
    result: list[Stage] = []
    defaults: dict[str, str] = {}
    for instruction in instructions(text):
        if instruction.keyword == "ARG" and not result:
            name, _, value = instruction.args.partition("=")
            defaults[name.strip()] = value.strip()
        if instruction.keyword == "FROM":
            words = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: defaults.get(m[1] or m[2], m[0]),
                instruction.args,
            ).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(words[0], name, []))
        elif not result:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: {instruction.keyword} before FROM")
        else:
            result[-1].instructions.append(instruction)
    return result


def load(path: Path) -> list[Stage]:
    return stages(path.read_text())


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD; ValueError for the shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        raise ValueError(f"not exec (JSON array) form: {args!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not a JSON array of strings: {args!r}")
    return value


def split_run(args: str) -> tuple[list[Mount], str]:
    """RUN's leading --mount= flags, and the shell command after them."""
    mounts: list[Mount] = []
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, _, value = flag[2:].partition("=")
        if name != "mount":
            raise ValueError(f"unsupported RUN flag {flag!r}")
        fields = dict(item.split("=", 1) for item in value.split(","))
        mounts.append(
            Mount(
                kind=fields.get("type", "bind"),
                source=fields.get("source", fields.get("src", "/")),
                target=fields.get("target", fields.get("dst", fields.get("destination", ""))),
                from_stage=fields.get("from"),
            )
        )
    return mounts, rest


def key_values(args: str) -> dict[str, str]:
    """ENV/LABEL `k=v k2="v 2"` pairs (the legacy `ENV k v` form is rejected)."""
    pairs: dict[str, str] = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {word!r}")
        pairs[key] = value
    return pairs


def healthcheck(args: str) -> tuple[dict[str, str], list[str]]:
    """HEALTHCHECK's --options and its exec-form CMD."""
    options: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, _, value = flag[2:].partition("=")
        options[name] = value
    keyword, _, command = rest.partition(" ")
    if keyword.upper() != "CMD":
        raise ValueError(f"HEALTHCHECK without CMD: {args!r}")
    return options, exec_form(command.strip())


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand(value: str, env: dict[str, str]) -> str:
    """$VAR / ${VAR} substitution as Docker does it in ENV values."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
