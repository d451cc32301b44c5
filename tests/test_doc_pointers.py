"""A docstring that sends the reader to a section of README.md or ARCHITECTURE.md
(``README: "Evaluate captions" → "CAPTURE"``) names headings that exist, in that order."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "factcap"
DOCUMENTS = {"README": "README.md", "ARCHITECTURE.md": "ARCHITECTURE.md"}
POINTER = re.compile(r'\b(README|ARCHITECTURE\.md): ("[^"\n]+"(?:\s*→\s*"[^"\n]+")*)')


def headings(markdown: str) -> list[str]:
    """The heading texts of ``markdown``, in order, outside fenced code blocks."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#").strip())
    return found


def pointers() -> list[tuple[str, str, list[str]]]:
    """``(file, document, [heading, subheading ...])`` for every pointer in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in POINTER.finditer(text):
            chain = re.findall(r'"([^"\n]+)"', match.group(2))
            found.append((str(path.relative_to(ROOT)), DOCUMENTS[match.group(1)], chain))
    return found


def test_headings_are_read_outside_code_blocks():
    text = "# A\n```bash\n# a comment\n```\n## B (`x`)\n#not a heading\n"
    assert headings(text) == ["A", "B (`x`)"]


def test_pointers_name_headings_that_exist_in_order():
    assert any(chain == ["Evaluate captions", "CAPTURE"] for _, _, chain in pointers())
    for file, document, chain in pointers():
        titles = headings((ROOT / document).read_text(encoding="utf-8"))
        at = -1
        for name in chain:
            later = [i for i, title in enumerate(titles) if title == name and i > at]
            where = " → ".join(f'"{title}"' for title in chain)
            assert later, f'{file} points to {document}: {where}; "{name}" is not a heading there'
            at = later[0]
