"""Every relative link and anchor in the repository's Markdown resolves (issue 18).

The checker's own logic is in tests/docs/links.py; the unit tests below prove it fails on a
missing file, a missing anchor and a repeated heading's anchor off by one, and passes on
good links.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import links

ROOT = Path(__file__).resolve().parents[2]


def test_every_markdown_link_in_the_repository_resolves() -> None:
    files = links.markdown_files(ROOT)
    names = {path.relative_to(ROOT).as_posix() for path in files}
    assert {"README.md", "docs/metrics.md"} <= names, names
    problems = [problem for path in files for problem in links.check_file(path, ROOT)]
    assert not problems, "links that do not resolve:\n" + "\n".join(problems)


def test_the_readme_maps_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = {link.target.partition("#")[0] for link in links.extract_links(readme)}
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages - targets == set(), "docs pages the README's map does not link"


# The checker itself.


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Quick start", "quick-start"),
        ("TLS and basic auth: --web.config.file", "tls-and-basic-auth---webconfigfile"),
        ("On-demand probe: /probe", "on-demand-probe-probe"),
        ("Docker Compose: everything in one command", "docker-compose-everything-in-one-command"),
        ("The `check` command", "the-check-command"),
        ("`meta_vantage_up` and [the lab](docs/lab.md)", "meta_vantage_up-and-the-lab"),
        ("**Bold** _emphasis_ and snake_case", "bold-emphasis-and-snake_case"),
        ("What's new? (2024)", "whats-new-2024"),
        ("Été 10 %", "été-10-"),
    ],
)
def test_slugs_follow_github(heading: str, expected: str) -> None:
    assert links.slug(links.heading_text(heading)) == expected


def test_anchors_number_repeated_headings_and_read_html_anchors() -> None:
    text = (
        '# Title\n\n## Setup\n\n## Setup\n\n### Setup\n\n<a id="custom"></a>\n'
        "Other\n=====\n\n```\n# not a heading\n```\n"
    )
    assert links.anchors(text) == {"title", "setup", "setup-1", "setup-2", "custom", "other"}


def test_links_in_code_and_absolute_urls_are_not_checked() -> None:
    text = (
        "[a](a.md) and `[b](b.md)` and [c](https://example.com/c) and [d](mailto:x@example.com)\n"
        "```\n[e](e.md)\n```\n"
        "<!-- [f](f.md) -->\n"
        '[g][ref] and ![h](img/h.png "title")\n\n'
        "[ref]: docs/g.md#part\n"
    )
    found = [(link.line, link.target) for link in links.extract_links(text)]
    assert found == [(1, "a.md"), (6, "img/h.png"), (8, "docs/g.md#part")]


def test_good_links_pass(tmp_path: Path) -> None:
    write(tmp_path, "docs/guide.md", "# Guide\n\n## Step one\n\n## Step one\n")
    write(tmp_path, "code/tool.py", "")
    readme = write(
        tmp_path,
        "README.md",
        "# Project\n\n## Below\n\n"
        "[guide](docs/guide.md) [step](docs/guide.md#step-one) [again](docs/guide.md#step-one-1)\n"
        "[here](#below) [top](#project) [code](code/) [tool](code/tool.py#L1)\n"
        "[ref]\n\n[ref]: <docs/guide.md#step-one>\n",
    )
    back = write(tmp_path, "docs/back.md", "[readme](../README.md#below) [root](/code/tool.py)\n")
    assert links.check_file(readme, tmp_path) == []
    assert links.check_file(back, tmp_path) == []


def test_a_missing_file_fails(tmp_path: Path) -> None:
    readme = write(tmp_path, "README.md", "# Project\n\nSee [metrics](docs/metrics.md).\n")
    assert links.check_file(readme, tmp_path) == [
        "README.md:3: [metrics](docs/metrics.md) -> docs/metrics.md does not exist"
    ]


def test_a_missing_anchor_fails(tmp_path: Path) -> None:
    write(tmp_path, "docs/metrics.md", "# Metrics\n\n## Metrics reference\n")
    readme = write(
        tmp_path,
        "README.md",
        "# Project\n\n[table](docs/metrics.md#metrics-table)\n[self](#quick-start)\n",
    )
    assert links.check_file(readme, tmp_path) == [
        "README.md:3: [table](docs/metrics.md#metrics-table) -> "
        "no heading or anchor #metrics-table in docs/metrics.md",
        "README.md:4: [self](#quick-start) -> no heading or anchor #quick-start in this file",
    ]


def test_a_repeated_heading_off_by_one_fails(tmp_path: Path) -> None:
    write(tmp_path, "docs/faq.md", "# FAQ\n\n## Why\n\n## Why\n")
    readme = write(tmp_path, "README.md", "[second why](docs/faq.md#why-2)\n")
    assert links.check_file(readme, tmp_path) == [
        "README.md:1: [second why](docs/faq.md#why-2) -> no heading or anchor #why-2 in docs/faq.md"
    ]


def test_links_leaving_the_repository_or_anchoring_a_directory_fail(tmp_path: Path) -> None:
    write(tmp_path, "repo/code/x.py", "")
    readme = write(tmp_path, "repo/README.md", "[out](../elsewhere.md) [dir](code/#top)\n")
    assert links.check_file(readme, tmp_path / "repo") == [
        "README.md:1: [out](../elsewhere.md) -> ../elsewhere.md is outside the repository",
        "README.md:1: [dir](code/#top) -> #top: code/ is a directory, it has no anchors",
    ]


def test_markdown_files_without_git_walks_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "README.md", "")
    write(tmp_path, "docs/a.md", "")
    write(tmp_path, ".venv/lib/pkg/README.md", "")
    write(tmp_path, "test-artifacts/report.md", "")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git to run
    assert links.markdown_files(tmp_path) == [tmp_path / "README.md", tmp_path / "docs/a.md"]
