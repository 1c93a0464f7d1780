"""Every link in the README and docs/ resolves inside the repository: a relative link names a file
or directory that exists, and a #fragment names a heading of the document it points at. Links to
other sites are left alone (nothing here can reach them), but none may point at this repository's
own files on a hosting site, which would drift from the tree they ship in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(REPO.glob("charts/*/README.md"))]
# [text](target) and [text]: target, outside code spans and fenced blocks.
INLINE = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)


def prose(markdown: str) -> str:
    """The document without fenced code blocks and inline code (their brackets are not links)."""
    without_fences = re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", without_fences)


def anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer (GitHub's rules) gives the document's headings."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(markdown).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"<[^>]+>", "", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    found |= set(re.findall(r'<a\s+(?:name|id)="([^"]+)"', markdown))
    return found


def links(document: Path) -> list[str]:
    text = prose(document.read_text())
    return INLINE.findall(text) + REFERENCE.findall(text)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_resolves_inside_the_repository(document):
    broken = []
    for target in links(document):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(
                f"{target}: no such file {resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved}"
            )
            continue
        if not resolved.is_relative_to(REPO):
            broken.append(f"{target}: outside the repository")
            continue
        if fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text()):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(REPO)}")
    assert not broken, f"{document.relative_to(REPO)}:\n" + "\n".join(broken)


def test_the_checker_finds_broken_links(tmp_path):
    """The check above can fail: a missing file, a missing heading, a good link."""
    (tmp_path / "other.md").write_text("# Real heading\n")
    doc = tmp_path / "doc.md"
    doc.write_text("See [a](other.md#real-heading), [b](missing.md), [c](other.md#nope), `[d](code.md)`.\n")
    assert links(doc) == ["other.md#real-heading", "missing.md", "other.md#nope"]
    assert "real-heading" in anchors((tmp_path / "other.md").read_text())
    assert "nope" not in anchors((tmp_path / "other.md").read_text())


def test_every_test_file_the_tree_names_exists():
    """A comment, doc or config that cites a test (``tests/.../test_x.py``) cites one that exists."""
    cited = re.compile(r"\btests/[\w/]+\.py\b")
    sources = [
        *DOCUMENTS,
        *(
            p
            for folder in ("walletkit", "services", "charts", "bench", "scripts")
            for p in (REPO / folder).rglob("*")
            if p.is_file() and p.suffix in (".py", ".yaml", ".yml", ".tpl", ".sh", ".md")
        ),
        REPO / "skaffold.yaml",
        REPO / "Makefile",
    ]
    missing = sorted(
        {
            f"{src.relative_to(REPO)}: {name}"
            for src in sources
            for name in cited.findall(src.read_text(errors="replace"))
            if not (REPO / name).exists()
        }
    )
    assert missing == []
