"""CLIP-Score and RefCLIP-Score (Hessel et al., 2021), for captions of any length.

Definitions (``cos`` is the cosine of L2-normalised CLIP embeddings, ``w = 2.5``):

- ``clip_cosine`` = cos(image, caption), in [-1, 1].
- ``clip_score`` = CLIP-S = w · max(clip_cosine, 0), in [0, 2.5] — Hessel et al.'s scale.
  torchmetrics' ``CLIPScore`` reports 100 · max(cos, 0) for one pair: multiply ``clip_score``
  by 40 (or ``clip_cosine``, clamped at 0, by 100) to compare.
- ``ref_clip_score`` = RefCLIP-S = harmonic mean of CLIP-S and max(max_r cos(caption, r), 0)
  over the references r, as in the paper (a harmonic mean with a 0 is 0); in [0, ~1.43].
  ``ref_clip_text_cosine`` is the unclamped max_r cos(caption, r).

Hessel et al.'s reference code prefixes every text with "A photo depicts"; torchmetrics does
not. The ``prefix`` option (default: none) selects either convention.

**Long text is never truncated.** A text that does not fit the text tower's context
(``max_text_tokens``, special tokens and prefix included, counted with the embedder's own
tokenizer: 77 for CLIP, 64 for SigLIP, 248 for Long-CLIP, which therefore split less) is cut
into *pieces* that fit: its sentences, and a sentence that still does not fit into windows of
whole words that overlap by ``window_overlap`` (a fraction of a window's words; a single word
longer than the context is cut into character chunks). Each piece is embedded on its own,
all pieces of a batch together.

**Aggregation: the mean of the per-piece cosines**, cos(x, text) = mean_p cos(x, p) — the same
as the dot product of x with the *unnormalised* mean of the pieces' unit embeddings; a
text-to-text cosine averages over every pair of pieces. Chosen over the cosine with the
re-normalised mean embedding because that one divides by the norm of the mean, which shrinks
as the pieces differ, so a long caption with varied sentences would be scored higher than any
of its sentences — a length bias in exactly the comparison (detailed vs. short captions) this
metric serves. The mean keeps one scale for one-piece and many-piece captions, and every
sentence counts: a sentence that does not match the image lowers the score in proportion to
its share of the pieces. A caption that fits is one piece, so the value is exactly the
classic CLIP-Score. The score's ``info`` says ``clip_split`` (was the caption split),
``clip_windows`` (how many pieces) and ``clip_tokens`` (its whole length in tokens).

A sample whose image cannot be decoded, whose caption is empty, or (RefCLIP) that has no
references is a failure (NaN with the reason).

>>> round(clip_s(0.3), 6), clip_s(-0.2)
(0.75, 0.0)
>>> round(ref_clip_s(0.75, [0.5, -0.1]), 6)
0.6
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from factcap.metrics.base import Metric, Sample, Score

#: Hessel et al.'s rescaling weight of CLIP-S.
W = 2.5

TokenCounter = Callable[[Sequence[str]], list[int]]

# After sentence-final punctuation (optionally followed by a closing quote or bracket), or at
# a line break.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…][\"'”’)\]])\s+|(?<=[.!?…])\s+|\s*\n\s*")


def clip_s(cosine: float, w: float = W) -> float:
    """CLIP-S: ``w · max(cosine, 0)``.

    >>> clip_s(0.4), clip_s(-0.1)
    (1.0, 0.0)
    """
    return w * max(float(cosine), 0.0)


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)`` of two non-negative values; 0 when either is 0.

    >>> harmonic_mean(1.0, 0.5), harmonic_mean(0.0, 0.7)
    (0.6666666666666666, 0.0)
    """
    return 0.0 if a <= 0.0 or b <= 0.0 else 2.0 * a * b / (a + b)


def ref_clip_s(clip_s_value: float, reference_cosines: Sequence[float]) -> float:
    """RefCLIP-S: harmonic mean of CLIP-S and ``max(max(reference_cosines), 0)``.

    >>> ref_clip_s(1.0, [0.2, 0.5])
    0.6666666666666666
    """
    if not reference_cosines:
        raise ValueError("RefCLIP-S needs at least one reference")
    return harmonic_mean(clip_s_value, max(max(float(c) for c in reference_cosines), 0.0))


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


def _token_counter(embedder: Any) -> tuple[TokenCounter | None, int | None]:
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
    texts: Sequence[str], resources: Any, prefix: str = "", overlap: float = 0.25
) -> list[EmbeddedText]:
    """Split every text to fit the embedder's context (see the module docstring) and embed
    all distinct pieces of all texts through ``resources.text_embeddings`` in one batched pass.

    ``prefix`` (e.g. "A photo depicts") is put before every piece and counted in its tokens.
    """
    if not texts:
        return []
    embedder = resources.get("embedder")
    count, limit = _token_counter(embedder)
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
    matrix = resources.text_embeddings(unique) if unique else np.zeros((0, 0), np.float32)
    return [
        EmbeddedText(matrix[[rows[prefixed(p)] for p in pieces]], n)
        for pieces, n in zip(split, lengths, strict=True)
    ]


def check_options(w: float, prefix: str, window_overlap: float) -> None:
    """Raise ValueError / TypeError for an out-of-range option of the CLIP metrics."""
    if not w > 0:
        raise ValueError(f"w must be > 0, got {w!r}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a string, got {type(prefix).__name__}")
    if not 0.0 <= window_overlap < 1.0:
        raise ValueError(f"window_overlap must be in [0, 1), got {window_overlap!r}")


class _ClipMetric(Metric):
    """What CLIP-S and RefCLIP-S share: options, image vectors, the failures they check."""

    def __init__(self, *, w: float = W, prefix: str = "", window_overlap: float = 0.25):
        check_options(w, prefix, window_overlap)
        self.w = float(w)
        self.prefix = prefix
        self.window_overlap = float(window_overlap)

    def _scorable(
        self, samples: Sequence[Sample], resources: Any
    ) -> tuple[list[Score | None], list[Any]]:
        """Failures decided before any text is embedded, and the image vectors."""
        if not resources.available("embedder"):
            reason = "no embedder (CLIP) model is configured for evaluation"
            return [Score.failed(self.value_names, reason) for _ in samples], []
        vectors = resources.image_embeddings([s.source for s in samples])
        scores: list[Score | None] = []
        for sample, vector in zip(samples, vectors, strict=True):
            if isinstance(vector, str):
                scores.append(Score.failed(self.value_names, vector))
            elif not sample.caption.strip():
                scores.append(Score.failed(self.value_names, "empty caption"))
            else:
                scores.append(self._precheck(sample))
        return scores, vectors

    def _precheck(self, sample: Sample) -> Score | None:
        return None

    def _embed(self, texts: Sequence[str], resources: Any) -> list[EmbeddedText]:
        return embed_split_texts(texts, resources, self.prefix, self.window_overlap)


class ClipScore(_ClipMetric):
    """CLIP-S of each caption with its image, long captions split (see the module docstring).

    Options: ``w`` (2.5), ``prefix`` ("" as torchmetrics; "A photo depicts" as Hessel et
    al.'s code), ``window_overlap`` (0.25).

    >>> from factcap.metrics import build
    >>> build("clip_score", prefix="A photo depicts").value_names
    ('clip_score', 'clip_cosine')
    """

    name = "clip_score"
    value_names = ("clip_score", "clip_cosine")
    needs = frozenset({"image", "embedder"})

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores, vectors = self._scorable(samples, resources)
        todo = [i for i, s in enumerate(scores) if s is None]
        texts = self._embed([samples[i].caption for i in todo], resources)
        for i, text in zip(todo, texts, strict=True):
            cosine = float(text.vector @ vectors[i].astype(np.float64))
            scores[i] = Score(
                {"clip_score": clip_s(cosine, self.w), "clip_cosine": cosine}, info=text.info()
            )
        return [s for s in scores if s is not None]


class RefClipScore(_ClipMetric):
    """RefCLIP-S of each caption given its image and its references (module docstring).

    Same options as :class:`ClipScore`; the prefix and the splitting apply to references too.

    >>> RefClipScore().needs == {"image", "references", "embedder"}
    True
    """

    name = "ref_clip_score"
    value_names = ("ref_clip_score", "ref_clip_text_cosine")
    needs = frozenset({"image", "references", "embedder"})

    def _precheck(self, sample: Sample) -> Score | None:
        if not any(r.strip() for r in sample.references):
            return Score.failed(self.value_names, "no references")
        return None

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores, vectors = self._scorable(samples, resources)
        todo = [i for i, s in enumerate(scores) if s is None]
        refs = [[r for r in samples[i].references if r.strip()] for i in todo]
        texts = [samples[i].caption for i in todo] + [r for rs in refs for r in rs]
        embedded = self._embed(texts, resources)
        candidates, rest = embedded[: len(todo)], embedded[len(todo) :]
        start = 0
        for i, candidate, rs in zip(todo, candidates, refs, strict=True):
            ref_cosines = [
                mean_cosine(candidate.pieces, r.pieces) for r in rest[start : start + len(rs)]
            ]
            start += len(rs)
            image_cosine = float(candidate.vector @ vectors[i].astype(np.float64))
            clip_value = clip_s(image_cosine, self.w)
            scores[i] = Score(
                {
                    "ref_clip_score": ref_clip_s(clip_value, ref_cosines),
                    "ref_clip_text_cosine": max(ref_cosines),
                },
                info=candidate.info(),
            )
        return [s for s in scores if s is not None]
