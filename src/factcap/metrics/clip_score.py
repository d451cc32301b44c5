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

from collections.abc import Sequence
from typing import Any

import numpy as np

from factcap.metrics.base import Metric, Sample, Score
from factcap.text import fit
from factcap.text.fit import (  # noqa: F401  (this module's API before they moved)
    EmbeddedText,
    TokenCounter,
    mean_cosine,
    split_sentences,
    split_to_fit,
    word_windows,
)

#: Hessel et al.'s rescaling weight of CLIP-S.
W = 2.5


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


def embed_split_texts(
    texts: Sequence[str], resources: Any, prefix: str = "", overlap: float = 0.25
) -> list[EmbeddedText]:
    """:func:`factcap.text.fit.embed_split_texts` with evaluation's embedder and its
    text-embedding cache."""
    if not texts:
        return []
    return fit.embed_split_texts(
        texts, resources.get("embedder"), resources.text_embeddings, prefix, overlap
    )


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
