"""The rooms of `exporter/` import only downward (docs/architecture.md).

Each room may import the rooms listed below it and its own modules, never a room above or
beside it: the engine never imports the web server, probes never import the engine, and the
simulator shares nothing with the exporter but its networking. Every import counts, also
the ones inside functions and under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exporter"

# room -> the rooms it may import. "vocabulary" is the package's top level (model, spec,
# egress): the words every room shares, which import nothing of the rooms.
MAY_IMPORT: dict[str, set[str]] = {
    "vocabulary": set(),
    "net": {"vocabulary"},
    "probes": {"vocabulary", "net"},
    "feeds": {"vocabulary", "net", "probes"},
    "config": {"vocabulary", "net", "probes"},
    "engine": {"vocabulary", "net", "probes", "feeds", "config"},
    "web": {"vocabulary", "net", "probes", "feeds", "config", "engine"},
    "sim": {"vocabulary", "net"},
    "cli": {"vocabulary", "net", "probes", "feeds", "config", "engine", "web", "sim"},
}


def room_of_file(path: Path) -> str:
    """The room a module file lives in; `__main__` is the command line's."""
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return "cli" if parts[0] == "__main__.py" else "vocabulary"
    return parts[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of_module(name: str) -> str | None:
    """The room of an imported `exporter...` module, None for anything else."""
    parts = name.split(".")
    if parts[0] != "exporter":
        return None
    if len(parts) == 1 or (PACKAGE / f"{parts[1]}.py").exists():
        return "vocabulary"
    return parts[1]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, relative ones resolved."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from exporter import engine` names a room by a name, not by the module path
            found += [
                (node.lineno, f"{module}.{alias.name}")
                for alias in node.names
                if (PACKAGE.parent / module.replace(".", "/") / alias.name).is_dir()
            ]
    return found


def violations(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        room = room_of_file(path)
        for line, module in imported_modules(path):
            target = room_of_module(module)
            if target is None or target == room or target in MAY_IMPORT[room]:
                continue
            where = path.relative_to(PACKAGE.parent)
            problems.append(f"{where}:{line}: the {room} room imports {module} ({target})")
    return problems


def test_every_room_is_known() -> None:
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(MAY_IMPORT) - {"vocabulary"}


def test_imports_only_go_downward() -> None:
    assert violations(sorted(PACKAGE.rglob("*.py"))) == []


@pytest.mark.parametrize(
    ("room", "source", "expected"),
    [
        ("engine", "from exporter.web.server import init_app\n", "imports exporter.web.server"),
        ("probes", "def f():\n    from exporter.engine import verdict\n", "exporter.engine"),
        ("net", "from ..probes import REGISTRY\n", "imports exporter.probes (probes)"),
        ("sim", "import exporter.config.loader\n", "exporter.config.loader (config)"),
        ("web", "from exporter import cli\n", "exporter.cli (cli)"),
    ],
)
def test_an_upward_import_is_named(
    room: str, source: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check itself fails on an import that goes up, wherever it stands in the file."""
    package = tmp_path / "exporter"
    for name in MAY_IMPORT:
        if name != "vocabulary":
            (package / name).mkdir(parents=True)
            (package / name / "__init__.py").write_text("")
    (package / "model.py").write_text("")
    bad = package / room / "bad.py"
    bad.write_text(source)
    monkeypatch.setattr(f"{__name__}.PACKAGE", package)
    [problem] = violations([bad])
    assert problem.startswith(f"exporter/{room}/bad.py:")
    assert expected in problem


def test_a_downward_import_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "exporter"
    for name in ("engine", "web"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "model.py").write_text("")
    good = package / "web" / "server.py"
    good.write_text(
        "from exporter.engine import runtime\nfrom exporter.model import X\n"
        "from . import statuspage\n"
    )
    monkeypatch.setattr(f"{__name__}.PACKAGE", package)
    assert violations([good]) == []
