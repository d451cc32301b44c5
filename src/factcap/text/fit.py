"""Fitting text into an embedder's context: split, never truncate.

A text that does not fit the text tower's context (``max_text_tokens``, special tokens and
prefix included, counted with the embedder's own tokenizer) is cut into *pieces* that fit: its
sentences, and a sentence that still does not fit into windows of whole words that overlap by
a fraction of a window's words (a single word longer than the context is cut into character
chunks). Each piece is embedded on its own; a text's cosine with a unit vector is the mean of
its pieces' cosines (:class:`EmbeddedText`). CLIP-Score (:mod:`factcap.metrics.clip_score`)
explains why the mean; the pipeline's proposal ranking scores with the same pieces.

>>> words = lambda texts: [len(t.split()) + 2 for t in texts]  # one token a word, + 2
>>> split_to_fit("A red car. It is parked by a tall tree.", words, 7, overlap=0.0)
['A red car.', 'It is parked by a', 'tall tree.']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TokenCounter = Callable[[Sequence[str]], list[int]]

# After sentence-final punctuation (optionally followed by a closing quote or bracket), or at
# a line break.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…][\"'”’)\]])\s+|(?<=[.!?…])\s+|\s*\n\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: breaks after ``. ! ? …`` (and a closing quote) and at line breaks.

    >>> split_sentences('A cat sleeps. It is "grey!" Behind it\\na lamp')
    ['A cat sleeps.', 'It is "grey!"', 'Behind it', 'a lamp']
    """
    return [s for s in (p.strip() for p in _SENTENCE_BREAK.split(text)) if s]


def _character_chunks(word: str, fits: Callable[[str], bool]) -> list[str]:
    """Cut one over-long word into the longest consecutive character chunks that fit."""
    chunks: list[str] = []
    rest = word
    while rest:
        lo, hi = 1, len(rest)  # binary search for the longest prefix that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(rest[:mid]) else (lo, mid - 1)
        chunks.append(rest[:lo])
        rest = rest[lo:]
    return chunks


def word_windows(
    text: str, count_tokens: TokenCounter, max_tokens: int, overlap: float = 0.25
) -> list[str]:
    """Overlapping windows of whole words of ``text``, each at most ``max_tokens`` tokens.

    Each window takes as many words as fit; the next one starts ``overlap`` of its words
    before its end (always at least one word further). ``count_tokens`` counts a batch of
    texts, special tokens included.

    >>> words = lambda texts: [len(t.split()) + 2 for t in texts]  # one token a word, + 2
    >>> word_windows("one two three four five six seven", words, 6, overlap=0.5)
    ['one two three four', 'three four five six', 'five six seven']
    """
    words = text.split()
    if not words:
        return []
    overhead = count_tokens([""])[0]
    if overhead >= max_tokens:
        raise ValueError(f"a context of {max_tokens} tokens leaves no room for text")

    def fits(piece: str) -> bool:
        return count_tokens([piece])[0] <= max_tokens

    costs = [c - overhead for c in count_tokens(words)]
    if any(overhead + c > max_tokens for c in costs):
        pieces: list[str] = []
        for word, cost in zip(words, costs, strict=True):
            pieces.extend(_character_chunks(word, fits) if overhead + cost > max_tokens else [word])
        words = pieces
        costs = [c - overhead for c in count_tokens(words)]

    windows: list[str] = []
    start = 0
    while True:
        end, total = start, overhead
        while end < len(words) and total + costs[end] <= max_tokens:
            total += costs[end]
            end += 1
        end = max(end, start + 1)
        # Per-word costs add up exactly for CLIP's BPE; check anyway for other tokenizers.
        while end > start + 1 and not fits(" ".join(words[start:end])):
            end -= 1
        windows.append(" ".join(words[start:end]))
        if end >= len(words):
            return windows
        start = max(start + 1, end - int(overlap * (end - start)))


def split_to_fit(
    text: str, count_tokens: TokenCounter, max_tokens: int, overlap: float = 0.25
) -> list[str]:
    """``[text]`` when it fits in ``max_tokens`` tokens; otherwise its sentences, each
    sentence that still does not fit cut into :func:`word_windows`. Nothing is dropped.

    >>> words = lambda texts: [len(t.split()) + 2 for t in texts]
    >>> split_to_fit("A red car. It is parked by a tall tree.", words, 12)
    ['A red car. It is parked by a tall tree.']
    >>> split_to_fit("A red car. It is parked by a tall tree.", words, 7, overlap=0.0)
    ['A red car.', 'It is parked by a', 'tall tree.']
    """
    text = text.strip()
    if not text or count_tokens([text])[0] <= max_tokens:
        return [text] if text else []
    sentences = split_sentences(text)
    pieces: list[str] = []
    for sentence, n in zip(sentences, count_tokens(sentences), strict=True):
        if n <= max_tokens:
            pieces.append(sentence)
        else:
            pieces.extend(word_windows(sentence, count_tokens, max_tokens, overlap))
    return pieces


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine over every pair of rows of ``a`` and ``b`` (unit rows, one per piece).

    >>> mean_cosine(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]]))
    0.5
    """
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    return float((a @ b.T).mean())


@dataclass(slots=True)
class EmbeddedText:
    """A text as its pieces' unit embeddings ``(windows, dim)``, and how it was split."""

    pieces: np.ndarray
    tokens: int | None

    @property
    def windows(self) -> int:
        return int(self.pieces.shape[0])

    @property
    def split(self) -> bool:
        return self.windows > 1

    @property
    def vector(self) -> np.ndarray:
        """The unnormalised mean of the piece embeddings: ``vector · x`` is the text's
        (mean-of-pieces) cosine with a unit vector ``x``."""
        return self.pieces.astype(np.float64).mean(axis=0)

    def info(self) -> dict[str, Any]:
        return {"clip_split": self.split, "clip_windows": self.windows, "clip_tokens": self.tokens}


def token_counter(embedder: Any) -> tuple[TokenCounter | None, int | None]:
    """The embedder's token counter and context, or (None, None) when it declares no limit."""
    limit = getattr(embedder, "max_text_tokens", None)
    if limit is None:
        return None, None
    counter = getattr(embedder, "count_tokens", None)
    if counter is None:
        tokenizer = getattr(embedder, "tokenizer", None)
        if tokenizer is None:
            raise TypeError(
                f"embedder {getattr(embedder, 'name', embedder)!r} declares max_text_tokens but "
                "has neither count_tokens() nor a tokenizer: long captions cannot be split"
            )

        def counter(texts: Sequence[str]) -> list[int]:
            return [len(ids) for ids in tokenizer(list(texts), verbose=False)["input_ids"]]

    return counter, int(limit)


def embed_split_texts(
    texts: Sequence[str],
    embedder: Any,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    prefix: str = "",
    overlap: float = 0.25,
) -> list[EmbeddedText]:
    """Split every text to fit ``embedder``'s context (see the module docstring) and embed
    all distinct pieces of all texts in one batched call of ``embed`` (default:
    ``embedder.embed_texts``; evaluation passes its cache).

    ``prefix`` (e.g. "A photo depicts") is put before every piece and counted in its tokens.
    """
    if not texts:
        return []
    embed = embed or embedder.embed_texts
    count, limit = token_counter(embedder)
    if not all(t.strip() for t in texts):
        raise ValueError("cannot embed an empty text")

    def prefixed(piece: str) -> str:
        # pieces are embedded with single spaces (line breaks only mark sentence ends)
        return " ".join(f"{prefix} {piece}".split())

    lengths: list[int | None]
    if count is None or limit is None:
        split = [[t] for t in texts]
        lengths = [None] * len(texts)
    else:

        def count_prefixed(pieces: Sequence[str]) -> list[int]:
            return count([prefixed(p) for p in pieces])

        lengths = list(count_prefixed(texts))
        split = [
            [t] if n <= limit else split_to_fit(t, count_prefixed, limit, overlap)
            for t, n in zip(texts, lengths, strict=True)
        ]
    unique = list(dict.fromkeys(prefixed(p) for pieces in split for p in pieces))
    rows = {p: i for i, p in enumerate(unique)}
    matrix = embed(unique) if unique else np.zeros((0, 0), np.float32)
    return [
        EmbeddedText(matrix[[rows[prefixed(p)] for p in pieces]], n)
        for pieces, n in zip(split, lengths, strict=True)
    ]
