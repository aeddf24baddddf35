"""Relative links and anchors in Markdown files, checked as GitHub renders them.

Pure functions over text and paths (no network): `markdown_files` lists the files,
`extract_links` the relative links in one file, `anchors` the ids its headings get, and
`check_file` what does not resolve.
"""

from __future__ import annotations

import os
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

# Directories a filesystem walk skips (only when git cannot list the tracked files).
SKIPPED_DIRS = frozenset({".git", ".venv", "test-artifacts", "node_modules", "__pycache__"})
MARKDOWN_SUFFIXES = (".md", ".markdown")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# [text](target) and ![alt](target); the text may hold one level of brackets.
_INLINE = re.compile(
    r"(?<!\\)!?\[(?:[^\[\]\\]|\\.|\[[^\[\]]*\])*\]"
    r"\(\s*(?P<target><[^<>\n]*>|(?:[^()\s]|\([^()\s]*\))*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
)
# [label]: target "title" (a reference definition).
_DEFINITION = re.compile(
    r"^ {0,3}\[((?:[^\[\]\\]|\\.)+)\]:[ \t]*(?P<target><[^<>\n]*>|\S+)", re.MULTILINE
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HTML_ANCHOR = re.compile(r"""<a\s[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]+>")
_HEADING_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\](?:\([^)]*\)|\[[^\]]*\])")
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![\w\\])(_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)")


@dataclass(frozen=True)
class Link:
    line: int  # 1-based line of the link in its file
    text: str  # the link as written, e.g. "[metrics](docs/metrics.md#metrics-reference)"
    target: str  # the raw target, e.g. "docs/metrics.md#metrics-reference"


def _blank(match: re.Match[str]) -> str:
    """The match with every character but newlines turned into a space (keeps offsets)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _blank_fences(text: str) -> str:
    """Fenced code blocks blanked out, line count kept (an unclosed fence runs to the end)."""
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        opening = _FENCE.match(line)
        if fence is None:
            if opening:
                fence = opening.group(1)
                out.append("")
                continue
            out.append(line)
        else:
            closing = opening and opening.group(1)[0] == fence[0]
            if closing and len(opening.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = None
            out.append("")
    return "\n".join(out)


def prose(text: str) -> str:
    """The Markdown with fenced code, inline code and HTML comments blanked out."""
    text = _blank_fences(text)
    text = _HTML_COMMENT.sub(_blank, text)
    return _CODE_SPAN.sub(_blank, text)


def extract_links(text: str) -> list[Link]:
    """Every relative link in `text`: inline, image and reference definitions.

    Absolute URLs (any scheme: https:, mailto:, ...) are left out, and so is everything
    inside fenced code blocks, inline code and HTML comments.
    """
    plain = prose(text)
    found: list[tuple[int, Link]] = []
    for pattern in (_INLINE, _DEFINITION):
        for match in pattern.finditer(plain):
            target = match.group("target").strip()
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1].strip()
            if not target or _SCHEME.match(target):
                continue
            line = plain.count("\n", 0, match.start()) + 1
            found.append((match.start(), Link(line, text[match.start() : match.end()], target)))
    return [link for _, link in sorted(found, key=lambda item: item[0])]


def heading_text(raw: str) -> str:
    """A heading's text as rendered: code spans, links, emphasis and HTML reduced to text."""
    pieces: list[str] = []
    last = 0
    for match in _CODE_SPAN.finditer(raw):
        pieces.append(_inline_markup(raw[last : match.start()]))
        code = match.group(2)
        if code.startswith(" ") and code.endswith(" ") and code.strip():
            code = code[1:-1]  # CommonMark strips one space on each side
        pieces.append(code)
        last = match.end()
    pieces.append(_inline_markup(raw[last:]))
    return "".join(pieces).strip()


def _inline_markup(text: str) -> str:
    text = _HEADING_LINK.sub(lambda m: m.group(1), text)
    text = _HTML_TAG.sub("", text)
    text = _EMPHASIS_UNDERSCORE.sub(lambda m: m.group(2), text)
    return re.sub(r"\\(.)", r"\1", text)


def slug(text: str) -> str:
    """GitHub's slug for a heading's text (github-slugger, without the de-duplication).

    Lowercase; letters, digits, marks, `_`, `-` and spaces kept, everything else dropped;
    each space becomes `-`.
    """
    kept = []
    for char in text.lower():
        category = unicodedata.category(char)
        if char in "-_ " or category[0] in "LNM" or category == "Pc":
            kept.append("-" if char == " " else char)
    return "".join(kept)


def headings(text: str) -> list[str]:
    """The text of every heading (ATX and setext), fenced code left out, in order."""
    lines = _blank_fences(_HTML_COMMENT.sub(_blank, text)).split("\n")
    found: list[str] = []
    for index, line in enumerate(lines):
        atx = _ATX.match(line)
        if atx:
            found.append(heading_text(atx.group(2) or ""))
            continue
        previous = lines[index - 1] if index else ""
        if (
            _SETEXT.match(line)
            and previous.strip()
            and not _ATX.match(previous)
            and not previous.lstrip().startswith(("|", "-", "*", "+", ">"))
            and not re.match(r"^\s*\d+[.)]\s", previous)
            and not _SETEXT.match(previous)
        ):
            found.append(heading_text(previous))
    return found


def anchors(text: str) -> set[str]:
    """Every anchor a link may name in this file: heading slugs, repeats numbered as GitHub
    does (`-1`, `-2`, ...), and explicit `<a id="...">` / `<a name="...">`."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in headings(text):
        base = slug(heading)
        candidate = base
        while candidate in seen:
            seen[base] += 1
            candidate = f"{base}-{seen[base]}"
        seen[candidate] = 0
        result.add(candidate)
    result.update(_HTML_ANCHOR.findall(_blank_fences(text)))
    return result


def resolve(link: Link, source: Path, root: Path) -> str | None:
    """None when the link resolves from `source`, else what is missing.

    A path is relative to the linking file (or to `root` when it starts with "/"), must
    exist and stay inside `root`. An anchor must be one of the target Markdown file's
    anchors; anchors into other files (e.g. GitHub's `#L10` on source) are not checked.
    """
    path_part, _, anchor = link.target.partition("#")
    path_part, anchor = unquote(path_part.split("?", 1)[0]), unquote(anchor)
    if not path_part:
        target = source
    elif path_part.startswith("/"):
        target = root / path_part.lstrip("/")
    else:
        target = source.parent / path_part
    target = target.resolve()
    if not target.is_relative_to(root.resolve()):
        return f"{path_part} is outside the repository"
    if not target.exists():
        return f"{path_part} does not exist"
    if not anchor:
        return None
    if target.is_dir():
        return f"#{anchor}: {path_part} is a directory, it has no anchors"
    if not target.name.lower().endswith(MARKDOWN_SUFFIXES):
        return None
    if anchor not in anchors(target.read_text(encoding="utf-8")):
        where = "this file" if target == source.resolve() else path_part
        return f"no heading or anchor #{anchor} in {where}"
    return None


def check_file(source: Path, root: Path) -> list[str]:
    """One message per link of `source` that does not resolve: file:line, link, what is missing."""
    problems = []
    source, root = source.resolve(), root.resolve()
    shown = source.relative_to(root) if source.is_relative_to(root) else source
    for link in extract_links(source.read_text(encoding="utf-8")):
        missing = resolve(link, source, root)
        if missing:
            problems.append(f"{shown}:{link.line}: {link.text} -> {missing}")
    return problems


def _is_markdown(name: str) -> bool:
    return name.lower().endswith(MARKDOWN_SUFFIXES)


def markdown_files(root: Path) -> list[Path]:
    """The Markdown files git tracks (or would: untracked, not ignored) under `root`; without
    git, or outside a git work tree, a walk of the tree that skips `SKIPPED_DIRS`."""
    try:
        listed = subprocess.run(
            # Tracked files, and new ones git does not ignore (a page not yet added).
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--"]
            + [f"*{suffix}" for suffix in MARKDOWN_SUFFIXES],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        found = []
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = [name for name in subdirs if name not in SKIPPED_DIRS]
            found += [Path(directory, name) for name in files if _is_markdown(name)]
        return sorted(found)
    names = {name for name in listed.split("\0") if _is_markdown(name)}
    return sorted(root / name for name in names if (root / name).is_file())
