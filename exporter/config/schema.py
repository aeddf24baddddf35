"""Turn plain YAML data into frozen dataclasses, collecting every error with its path.

The dataclasses' type hints are the schema: str, int, float, bool, Duration, Literal,
X | None, tuple[X, ...], dict[str, X] and nested dataclasses. A field without a default is
required. A dataclass may define `check(self) -> list[tuple[str, str]]` returning
(field, message) pairs for rules the types cannot say (e.g. "must be positive").
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union

from .yamlsource import Path, format_path

T = TypeVar("T")


class _DurationMarker:
    """Marks a float field holding seconds, written in config as 15s, 250ms, 2m, 1h or 0.5."""


Duration = Annotated[float, _DurationMarker]

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    message: str
    hint: str = ""


class SchemaErrors(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{format_path(p.path)}: {p.message}" for p in problems))
        self.problems = problems


def field_path(name: str) -> Path:
    """("allow_networks", 0) from "allow_networks[0]"; dotted names split at the dots."""
    parts: list[str | int] = []
    for piece in name.split("."):
        head, *indices = piece.replace("]", "").split("[")
        parts.append(head)
        parts.extend(int(i) for i in indices)
    return tuple(parts)


def parse_duration(value: Any) -> float:
    """Seconds from 15s / 250ms / 2m / 1h / a bare number; ValueError when it is none of those."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError("expected a duration")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return "a duration (e.g. 15s, 250ms, 2m)"
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is tuple:
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, str(hint)
    )


def _shown(value: Any) -> str:
    # Containers by shape only: they may hold credentials (headers) that must not be echoed.
    if isinstance(value, Mapping):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Builder:
    """Builds one dataclass tree, accumulating problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: Path, message: str, hint: str = "") -> None:
        self.problems.append(Problem(path, message, hint))

    def build(
        self, cls: type[T], data: Any, path: Path, *, ignore: frozenset[str] = frozenset()
    ) -> T | None:
        """A `cls` instance from a mapping, or None (with problems recorded) when it cannot be."""
        if not isinstance(data, Mapping):
            self.fail(path, f"expected a mapping, got {_shown(data)}")
            return None
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        for key in data:
            if key not in fields and key not in ignore:
                close = difflib.get_close_matches(key, [*fields, *ignore], n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else "known keys: " + ", ".join(sorted([*fields, *ignore]))
                )
                self.fail((*path, key), f"unknown key {key!r}", hint)
        values: dict[str, Any] = {}
        before = len(self.problems)
        for name, field in fields.items():
            if name in data:
                values[name] = self.value(hints[name], data[name], (*path, name))
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                self.fail(
                    (*path, name),
                    f"missing required key {name!r}",
                    f"add {name}: <{_type_name(hints[name])}>",
                )
        if len(self.problems) > before:
            return None
        instance = cls(**values)
        checker = getattr(instance, "check", None)
        if callable(checker):
            for field_name, message in checker():
                self.fail((*path, *field_path(field_name)) if field_name else path, message)
        return instance if len(self.problems) == before else None

    def value(self, hint: Any, data: Any, path: Path) -> Any:
        if hint is Any:
            return data  # checked later by whoever owns the value (e.g. a service's checks)
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is Annotated and _DurationMarker in args[1:]:
            try:
                return parse_duration(data)
            except ValueError:
                self.fail(path, f"expected a duration like 15s, 250ms or 2m, got {_shown(data)}")
                return None
        if origin in (Union, types.UnionType):
            if data is None and type(None) in args:
                return None
            options = [a for a in args if a is not type(None)]
            if len(options) == 1:
                return self.value(options[0], data, path)
            for option in options:
                trial = Builder()
                result = trial.value(option, data, path)
                if not trial.problems:
                    return result
            self.fail(path, f"expected {_type_name(hint)}, got {_shown(data)}")
            return None
        if origin is Literal:
            if data in args:
                return data
            self.fail(path, f"expected {_type_name(hint)}, got {_shown(data)}")
            return None
        if origin is tuple:
            items = data if isinstance(data, list) else None
            if items is None:
                self.fail(path, f"expected a list, got {_shown(data)}")
                return None
            return tuple(self.value(args[0], item, (*path, i)) for i, item in enumerate(items))
        if origin in (dict, Mapping):
            if not isinstance(data, Mapping):
                self.fail(path, f"expected a mapping, got {_shown(data)}")
                return None
            return types.MappingProxyType(
                {k: self.value(args[1], v, (*path, k)) for k, v in data.items()}
            )
        if dataclasses.is_dataclass(hint):
            return self.build(hint, data, path)
        return self._scalar(hint, data, path)

    def _scalar(self, hint: Any, data: Any, path: Path) -> Any:
        ok = {
            str: isinstance(data, str),
            bool: isinstance(data, bool),
            int: isinstance(data, int) and not isinstance(data, bool),
            float: isinstance(data, int | float) and not isinstance(data, bool),
        }.get(hint)
        if ok is None:
            raise TypeError(f"schema type {hint!r} is not supported")  # a bug in our schema
        if not ok:
            self.fail(path, f"expected {_type_name(hint)}, got {_shown(data)}")
            return None
        return float(data) if hint is float else data
