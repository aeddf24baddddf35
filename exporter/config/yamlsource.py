"""Load YAML into plain Python data while remembering where every value came from.

Config errors must name the file and line, so the loader walks PyYAML's node tree
itself and records the position of each key and value by its path
(e.g. ("services", "facebook", "checks", "web", "timeout")).
Duplicate keys are an error here, because PyYAML silently keeps the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class YamlSyntaxError(Exception):
    """The text is not YAML we accept. str() names file, line and what is wrong."""

    def __init__(self, position: Position, message: str) -> None:
        super().__init__(f"{position}: {message}")
        self.position = position
        self.message = message


@dataclass(slots=True)
class Document:
    """Plain data plus a path -> position table (the position of the value at that path)."""

    data: Any
    positions: dict[Path, Position]
    file: str

    def position(self, path: Path) -> Position:
        """The nearest known position: the value's own, else its closest parent's."""
        for cut in range(len(path), -1, -1):
            found = self.positions.get(path[:cut])
            if found is not None:
                return found
        return Position(self.file, 1, 1)


def format_path(path: Path) -> str:
    """services.facebook.checks[0] style, for messages."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _position(file: str, mark: yaml.Mark | None) -> Position:
    if mark is None:
        return Position(file, 1, 1)
    return Position(file, mark.line + 1, mark.column + 1)


def _scalar(node: yaml.ScalarNode, file: str) -> Any:
    # Resolve the scalar with PyYAML's own implicit typing rules (ints, bools, nulls...).
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(_position(file, node.start_mark), str(exc)) from None
    finally:
        loader.dispose()


def _convert(node: yaml.Node, path: Path, file: str, positions: dict[Path, Position]) -> Any:
    positions[path] = _position(file, node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node, file)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), file, positions) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSyntaxError(
                    _position(file, key_node.start_mark), "YAML merge keys (<<) are not supported"
                )
            key = _convert(key_node, (*path, "<key>"), file, positions)
            if not isinstance(key, str):
                raise YamlSyntaxError(
                    _position(file, key_node.start_mark),
                    f"mapping keys must be strings, got {key!r}",
                )
            if key in result:
                raise YamlSyntaxError(
                    _position(file, key_node.start_mark),
                    f"duplicate key {key!r} in {format_path(path)} (each name may appear once)",
                )
            result[key] = _convert(value_node, (*path, key), file, positions)
        positions.pop((*path, "<key>"), None)
        return result
    raise YamlSyntaxError(_position(file, node.start_mark), f"unsupported YAML node {node.tag}")


def load(text: str, file: str) -> Document:
    """Parse one YAML document. An empty document is an empty mapping."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or str(exc)
        raise YamlSyntaxError(_position(file, mark), f"invalid YAML: {message}") from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Position(file, 1, 1), f"invalid YAML: {exc}") from None
    positions: dict[Path, Position] = {}
    data = {} if node is None else _convert(node, (), file, positions)
    return Document(data=data, positions=positions, file=file)
