"""The ~400-line rule (issue 12): a module under src/ over 400 lines says why in its docstring.

"Says why" = a paragraph of the module docstring names the size ("400 lines") and gives a
reason ("because ...", "on purpose: ..."), so a newcomer opening the file reads first why it
was not split.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
LIMIT = 400
_REASON = re.compile(r"\b(because|on purpose|so that|since)\b", re.I)


def _says_why(docstring: str) -> bool:
    for paragraph in re.split(r"\n\s*\n", docstring or ""):
        text = " ".join(paragraph.split())
        if re.search(r"\b400 lines\b", text) and _REASON.search(text):
            return True
    return False


def oversized_without_reason(root: Path):
    """(path, lines) of every module under ``root`` over LIMIT lines whose docstring does not say why."""
    out = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n")
        if lines > LIMIT and not _says_why(ast.get_docstring(ast.parse(source)) or ""):
            out.append((str(path.relative_to(root)), lines))
    return out


def test_every_module_over_400_lines_says_why_in_its_docstring():
    assert oversized_without_reason(SRC) == [], (
        "over 400 lines without a reason in the module docstring (split it, or say why in a "
        "paragraph naming '400 lines' and 'because ...')")


def test_the_check_flags_a_long_module_without_a_reason_and_accepts_one_with_it(tmp_path):
    body = "x = 1\n" * (LIMIT + 1)
    (tmp_path / "silent.py").write_text('"""A module."""\n' + body)
    (tmp_path / "sized.py").write_text('"""A module.\n\nOver 400 lines on purpose: one job.\n"""\n' + body)
    (tmp_path / "short.py").write_text('"""A module."""\n' + "x = 1\n" * 10)
    assert oversized_without_reason(tmp_path) == [("silent.py", LIMIT + 2)]
