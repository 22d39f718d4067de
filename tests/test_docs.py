"""The README is a front door: short, linking every page of ``docs/``; and every relative link in
it and in ``docs/*.md`` leads to a file that exists (web links and anchors are not checked).

The Python examples the README shows are run by ``tests/test_api.py`` and ``tests/test_sampling.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
#: ``[text](target)`` and ``![alt](target "title")``; fenced code is removed first.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)


def links(path: Path) -> list[str]:
    """Every link target of a Markdown file outside fenced code."""
    return LINK.findall(FENCE.sub("", path.read_text()))


def local_targets(path: Path) -> list[tuple[str, Path]]:
    """``(target, resolved path)`` of each relative link: no scheme, not an anchor in the page."""
    out = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append((target, (path.parent / target.split("#")[0].split("?")[0]).resolve()))
    return out


def test_the_readme_is_a_front_door_of_at_most_260_lines():
    n = len(README.read_text().splitlines())
    assert n <= 260, f"README.md has {n} lines: move detail to a page of docs/ and link it"


def test_the_docs_are_there_and_the_readme_links_every_page():
    assert DOCS, "docs/*.md"
    linked = {p for _, p in local_targets(README)}
    orphans = [p.relative_to(ROOT).as_posix() for p in DOCS if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_that_exists(page):
    broken = [t for t, p in local_targets(page) if not p.exists()]
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_the_link_reader_finds_links_and_skips_code_and_web_links(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        'See [a](a.md#x), ![img](bench/x.png "t"), [web](https://e.org/y.md), [here](#z).\n'
        "```bash\necho '[no](fenced.md)'\n```\n[`code`](../b/c.json)\n"
    )
    assert [t for t, _ in local_targets(page)] == ["a.md#x", "bench/x.png", "../b/c.json"]
    assert local_targets(page)[0][1] == tmp_path / "a.md"
