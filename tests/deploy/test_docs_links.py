"""Every relative link in README.md and docs/**/*.md resolves inside this repository.

A link is ``[text](target)``, ``![alt](target)`` or a reference definition ``[name]: target``
outside code blocks and inline code.  Web links (``http(s)://``, ``mailto:``) are not checked
here.  A relative target must name a file or folder of the repo (not ``../shared/...`` next to
it: a reader of the repo alone would find nothing), and a ``#anchor`` must name a heading of
the target document (GitHub's heading ids) or an explicit ``<a id=...>``/``<a name=...>``.
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+).*?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)   # http:, https:, mailto:, ...


def documents():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def _prose_lines(text, keep_code=False):
    """(line number, line) outside fenced code blocks, inline code removed unless ``keep_code``
    (a heading's id keeps the text of its inline code)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line if keep_code else _INLINE_CODE.sub("", line)


def links(path):
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(line):
            yield number, match.group(1)
        ref = _REFERENCE.match(line)
        if ref:
            yield number, ref.group(1)


def slug(heading):
    """GitHub's id for a heading: markup dropped, lower case, punctuation out, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    out, seen = set(), {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), keep_code=True):
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
        out.update(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return out


def problems(path):
    found = []
    for number, target in links(path):
        if _EXTERNAL.match(target):
            continue
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if resolved != ROOT and ROOT not in resolved.parents:
            found.append(f"{where} (points outside the repository)")
        elif not resolved.exists():
            found.append(f"{where} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            found.append(f"{where} (no heading #{anchor} in {resolved.relative_to(ROOT)})")
    return found


def test_every_relative_link_in_the_readme_and_docs_resolves_in_the_repo():
    found = [p for path in documents() for p in problems(path)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("link, ok", [
    ("[a](architecture.md)", True),
    ("[a](architecture.md#threads)", True),
    ("[a](architecture.md#primus-lens-doctor-and-replay)", True),
    ("[a](architecture.md#no-such-heading)", False),
    ("[a](missing.md)", False),
    ("[a](../../outside.md)", False),
    ("![shot](img/x.png)", False),
    ("[a](https://example.com/x.md)", True),
    ("`[a](missing.md)` in code", True),
])
def test_the_check_catches_missing_files_anchors_and_links_out_of_the_repo(tmp_path, monkeypatch, link, ok):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "architecture.md").write_text("# Map\n\n## Threads\n\n## `primus-lens doctor` and `replay`\n")
    page = docs / "page.md"
    page.write_text(f"# Page\n\nSee {link}.\n\n```\n[not a link](nowhere.md)\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert (problems(page) == []) is ok
