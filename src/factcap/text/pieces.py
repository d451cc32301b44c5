"""Cutting a caption into the pieces a style is written in: sentences, or comma phrases.

>>> split_pieces("A dog. It runs!  A cat?", "sentences")
['A dog.', 'It runs!', 'A cat?']
>>> split_pieces("red car, tall tree,", "phrases")
['red car', 'tall tree']
"""

from __future__ import annotations

import re

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def split_pieces(text: str, pieces: str) -> list[str]:
    """``text`` cut into sentences, or (``pieces="phrases"``) comma-separated phrases."""
    if pieces == "phrases":
        return [p.strip() for p in text.split(",") if p.strip()]
    return [p.strip() for p in SENTENCE_BREAK.split(text) if p.strip()]


def join_pieces(pieces: list[str], kind: str) -> str:
    """The inverse of :func:`split_pieces` for pieces already cleaned.

    >>> join_pieces(["a", "b"], "phrases"), join_pieces(["A.", "B."], "sentences")
    ('a, b', 'A. B.')
    """
    return (", " if kind == "phrases" else " ").join(pieces).strip()
