"""Just enough PromQL scanning to lint dashboards: every selector, its matchers, the function
directly around it and the range right after it. Not a parser: Prometheus (the lab test) and
promtool (the lint test) judge syntax; this finds what the conventions talk about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<braces>\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})
    | (?P<range>\[[^\]]*\])
    | (?P<variable>\$\{?\w+(?::\w+)?\}?)
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<other>[,+\-*/%^=!<>~]+)
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')

AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ]
)
LABEL_LISTS = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])
KEYWORDS = frozenset(["and", "or", "unless", "bool", "offset", "inf", "nan"]) | LABEL_LISTS
RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)
    function: str | None  # the call directly around it (rate, max_over_time ...), if any
    range: str | None  # "[5m]" right after it, if any

    def has(self, label: str, operator: str, value: str) -> bool:
        return (label, operator, value) in self.matchers


def tokens(expr: str) -> list[tuple[str, str]]:
    out, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot scan {expr[position:]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append((kind, match.group()))
        position = match.end()
    return out


def selectors(expr: str) -> list[Selector]:
    found: list[Selector] = []
    toks = tokens(expr)
    stack: list[str | None] = []  # the function of each open parenthesis
    callee: str | None = None
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "ident" and text in LABEL_LISTS and following == "(":
            i = next(j for j in range(i, len(toks)) if toks[j][0] == "close") + 1
            continue
        if kind == "ident" and (following == "(" or text in AGGREGATIONS):
            callee = text
        elif kind == "open":
            stack.append(callee)
            callee = None
        elif kind == "close":
            stack.pop()
        elif kind == "ident" and text not in KEYWORDS:
            j = i + 1
            matchers: tuple[tuple[str, str, str], ...] = ()
            if j < len(toks) and toks[j][0] == "braces":
                matchers = tuple(_MATCHER.findall(toks[j][1]))
                j += 1
            window = toks[j][1] if j < len(toks) and toks[j][0] == "range" else None
            found.append(Selector(text, matchers, stack[-1] if stack else None, window))
            i = j
            continue
        i += 1
    return found


def rate_calls(expr: str) -> int:
    return sum(1 for kind, text in tokens(expr) if kind == "ident" and text in RATE_FUNCTIONS)
