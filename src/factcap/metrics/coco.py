"""The COCO caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D, as pycocoevalcap computes them.

Pure-Python re-implementations (no Java, pycocoevalcap not needed) that give pycocoevalcap's
values on the same tokens — same n-gram counting, smoothing constants, brevity penalty,
clipping and order of floating-point operations; the tests check the two agree exactly.
Captions and references are first tokenised with :func:`factcap.metrics.tokenize.tokenize`
(a pure-Python approximation of the PTBTokenizer pycocoevalcap runs through Java: lower
case, punctuation split off and removed); ``tokenize=False`` takes them as already
tokenised (tokens separated by spaces).

Definitions (``c`` the candidate, ``R`` its references, all token sequences):

- ``bleu`` (Papineni et al.) — BLEU-n for n = 1..4 in [0, 1]: modified n-gram precisions
  (candidate counts clipped by the highest count in any single reference) combined by a
  geometric mean, times the brevity penalty ``exp(1 - r/c)`` when the candidate is shorter
  than ``r``, the length of the reference closest in length to it (the shorter one on a tie).
  As in pycocoevalcap, precisions are smoothed as ``(matches + 1e-15) / (total + 1e-9)``.
  Per item: that formula on the item alone. Corpus (:meth:`Bleu.corpus`, the number to
  report): matches, totals and lengths summed over the set first — BLEU is not the mean of
  the per-item scores.
- ``rouge_l`` (Lin, 2004) — in [0, 1]: the longest common subsequence with each reference
  gives a precision and a recall; the maxima over the references, ``P`` and ``R``, combine
  as ``(1 + β²)·P·R / (R + β²·P)`` with β = 1.2 (0 when either is 0). Tokens are split on
  single spaces, as pycocoevalcap does. The summary is the mean of the items.
- ``cider`` — CIDEr-D (Vedantam et al., 2015) as pycocoevalcap's ``Cider``: TF-IDF vectors of
  1..4-grams whose document frequencies come from the **references of the whole evaluated
  set** (one document per image), cosine-like similarity with clipping of the candidate's
  weights by the reference's, a Gaussian length penalty ``exp(-δ²/2σ²)`` with σ = 6 (δ is,
  as in pycocoevalcap, the difference of the numbers of *bigrams*), averaged over n and over
  the references, ×10. So an item's CIDEr depends on the other items scored with it: score a
  whole caption source at once (as ``factcap evaluate`` does), never item by item; a set of
  one item scores 0 (every n-gram's IDF is then 0). In [0, 10], typically 0–3. The corpus
  value is the mean of the items.

A sample without references cannot be scored: NaN with the reason ``no references``.
An empty caption is a caption, and scores 0. The corpus statistics (BLEU's sums, CIDEr's
document frequencies) cover the samples that have references.

>>> round(cider_d(["a cat on a mat", "a dog"], [["a cat on the mat"], ["a big dog"]])[0], 6)
2.995891
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from factcap.metrics.base import NAN, Metric, Sample, Score
from factcap.metrics.tokenize import tokenize as ptb_tokenize

__all__ = ["Bleu", "Cider", "RougeL", "bleu", "cider_d", "lcs_length", "rouge_l"]

_TINY = 1e-15  # pycocoevalcap's BLEU smoothing: a zero precision stays (almost) zero
_SMALL = 1e-9


def _check(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of strings, not one string")
    if len(candidates) != len(references):
        raise ValueError(
            f"{len(candidates)} candidates but {len(references)} reference lists: "
            "give one list of references per candidate"
        )
    for i, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise ValueError(f"item {i}: references must be a non-empty list of strings")


def _ngram_counts(tokens: Sequence[str], n: int) -> dict[tuple[str, ...], int]:
    """Counts of the 1..n-grams of ``tokens``, in pycocoevalcap's order (by n, then position)."""
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            gram = tuple(tokens[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def bleu(
    candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4
) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n and per-item BLEU-1..n of tokenised captions (see module doc).

    ``candidates[i]`` is scored against ``references[i]`` (one or more); tokens are
    separated by whitespace. Returns ``([b1..bn], [[b1..bn] per item])``; with no items the
    corpus values are NaN.

    >>> corpus, items = bleu(["a cat sits on the mat"], [["a cat is on the mat", "a cat"]])
    >>> [round(b, 4) for b in corpus]
    [0.8333, 0.7071, 0.5, 0.0001]
    >>> items[0] == corpus  # one item: the corpus is that item
    True
    """
    _check(candidates, references)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    per_item: list[list[float]] = []
    total_test = total_ref = 0
    total_guess, total_correct = [0] * n, [0] * n
    for candidate, refs in zip(candidates, references, strict=True):
        words = candidate.split()
        test_len = len(words)
        counts = _ngram_counts(words, n)
        max_ref: dict[tuple[str, ...], int] = {}
        ref_lens = []
        for ref in refs:
            ref_words = ref.split()
            ref_lens.append(len(ref_words))
            for gram, count in _ngram_counts(ref_words, n).items():
                max_ref[gram] = max(max_ref.get(gram, 0), count)
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for gram, count in counts.items():
            correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
        per_item.append(_bleu_from_counts(correct, guess, test_len, ref_len))
        total_test += test_len
        total_ref += ref_len
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
    if not per_item:
        return [NAN] * n, []
    return _bleu_from_counts(total_correct, total_guess, total_test, total_ref), per_item


def _bleu_from_counts(
    correct: Sequence[int], guess: Sequence[int], test_len: int, ref_len: int
) -> list[float]:
    scores = []
    product = 1.0
    for k in range(len(correct)):
        product *= (float(correct[k]) + _TINY) / (float(guess[k]) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        penalty = math.exp(1 - 1 / ratio)
        scores = [s * penalty for s in scores]
    return scores


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    >>> lcs_length("a cat on the mat".split(), "the cat sat on a mat".split())
    3
    """
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(
    candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2
) -> tuple[float, list[float]]:
    """Mean and per-item ROUGE-L (F-measure with ``beta``, best precision and recall over
    the references) of tokenised captions; tokens are separated by single spaces.

    >>> mean, items = rouge_l(["a cat on the mat", "a dog"], [["the cat on a mat"], ["dogs"]])
    >>> round(mean, 6), [round(s, 6) for s in items]
    (0.3, [0.6, 0.0])
    """
    _check(candidates, references)
    scores = []
    for candidate, refs in zip(candidates, references, strict=True):
        cand = candidate.split(" ")
        precisions, recalls = [], []
        for ref in refs:
            ref_tokens = ref.split(" ")
            common = lcs_length(ref_tokens, cand)
            precisions.append(common / float(len(cand)))
            recalls.append(common / float(len(ref_tokens)))
        p, r = max(precisions), max(recalls)
        if p != 0 and r != 0:
            scores.append(((1 + beta**2) * p * r) / float(r + beta**2 * p))
        else:
            scores.append(0.0)
    return _mean(scores), scores


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """Mean and per-item CIDEr-D of tokenised captions, with document frequencies from the
    references of exactly these items (see module doc); tokens separated by whitespace.

    >>> mean, items = cider_d(["a cat on a mat", "a dog"], [["a cat on the mat"], ["a big dog"]])
    >>> [round(s, 6) for s in items]
    [4.248397, 1.743384]
    """
    _check(candidates, references)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not candidates:
        return NAN, []
    tests = [_ngram_counts(c.split(), n) for c in candidates]
    refs_counts = [[_ngram_counts(r.split(), n) for r in refs] for refs in references]
    doc_freq: dict[tuple[str, ...], float] = {}
    for refs in refs_counts:
        for gram in {g for counts in refs for g in counts}:
            doc_freq[gram] = doc_freq.get(gram, 0.0) + 1.0
    log_docs = np.log(float(len(refs_counts)))
    penalty_scale = 2 * sigma**2

    def tfidf(counts: dict[tuple[str, ...], int]) -> tuple[list[dict], list[Any], int]:
        vec: list[dict[tuple[str, ...], Any]] = [{} for _ in range(n)]
        norm_sq: list[Any] = [0.0] * n
        bigrams = 0  # pycocoevalcap's "length" counts bigrams, and so does delta below
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = float(tf) * (log_docs - np.log(max(1.0, doc_freq.get(gram, 0.0))))
            vec[k][gram] = weight
            norm_sq[k] += pow(weight, 2)
            if k == 1:
                bigrams += tf
        return vec, [np.sqrt(v) for v in norm_sq], bigrams

    scores = []
    for test, refs in zip(tests, refs_counts, strict=True):
        vec, norm, length = tfidf(test)
        total = np.zeros(n)
        for ref in refs:
            vec_ref, norm_ref, length_ref = tfidf(ref)
            delta = float(length - length_ref)
            sim = np.zeros(n)
            for k in range(n):
                for gram, weight in vec[k].items():
                    ref_weight = vec_ref[k].get(gram, 0.0)
                    sim[k] += min(weight, ref_weight) * ref_weight
                if norm[k] != 0 and norm_ref[k] != 0:
                    sim[k] /= norm[k] * norm_ref[k]
                sim[k] *= math.e ** (-(delta**2) / penalty_scale)
            total += sim
        score = np.mean(total)
        score /= len(refs)
        score *= 10.0
        scores.append(float(score))
    return _mean(scores), scores


def _mean(values: Sequence[float]) -> float:
    """numpy's mean (pycocoevalcap's summation order); NaN for no values."""
    return float(np.mean(np.array(values))) if len(values) else NAN


def _prepare(
    samples: Sequence[Sample], tokenize: bool
) -> tuple[list[int], list[str], list[list[str]]]:
    """Indices of the samples with references, their candidates and references, tokenised."""
    keep, candidates, references = [], [], []
    for i, sample in enumerate(samples):
        refs = [r for r in sample.references if r.strip()]
        if not refs:
            continue
        keep.append(i)
        if tokenize:
            candidates.append(ptb_tokenize(sample.caption))
            references.append([ptb_tokenize(r) for r in refs])
        else:
            candidates.append(" ".join(sample.caption.split()))
            references.append([" ".join(r.split()) for r in refs])
    return keep, candidates, references


class _CocoMetric(Metric):
    """Shared by the three: options, reference filtering and failed samples."""

    needs = frozenset({"references"})

    def __init__(self, *, tokenize: bool = True) -> None:
        self.tokenize = bool(tokenize)

    def _per_item(self, candidates: list[str], references: list[list[str]]) -> list[Score]:
        raise NotImplementedError

    def score(self, samples: Sequence[Sample], resources: Any = None) -> list[Score]:
        keep, candidates, references = _prepare(samples, self.tokenize)
        scores = [Score.failed(self.value_names, "no references") for _ in samples]
        for i, item in zip(keep, self._per_item(candidates, references), strict=True):
            scores[i] = item
        return scores


class Bleu(_CocoMetric):
    """BLEU-1..4 per item, and the corpus BLEU pycocoevalcap reports (see module doc).

    >>> samples = [Sample("1", "1.jpg", "final:short", "A cat on a mat.", ["A cat on the mat."])]
    >>> metric = Bleu()
    >>> round(metric.score(samples, None)[0].values["bleu_1"], 4)
    0.8
    >>> round(metric.corpus(samples, metric.score(samples, None))["bleu_1"], 4)
    0.8
    """

    name = "bleu"
    value_names = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")

    def _per_item(self, candidates: list[str], references: list[list[str]]) -> list[Score]:
        _, items = bleu(candidates, references, n=4)
        return [Score(dict(zip(self.value_names, values, strict=True))) for values in items]

    def corpus(self, samples: Sequence[Sample], scores: Sequence[Score]) -> dict[str, float]:
        """Corpus BLEU over the samples that have references (sums first, then BLEU)."""
        _, candidates, references = _prepare(samples, self.tokenize)
        values, _ = bleu(candidates, references, n=4)
        return dict(zip(self.value_names, values, strict=True))


class RougeL(_CocoMetric):
    """ROUGE-L (β = 1.2, best over the references) per item; the summary is the mean.

    >>> samples = [Sample("1", "1.jpg", "final:short", "A cat on a mat.", ["The cat sat."])]
    >>> round(RougeL().score(samples, None)[0].values["rouge_l"], 4)
    0.2618
    """

    name = "rouge_l"
    value_names = ("rouge_l",)

    def _per_item(self, candidates: list[str], references: list[list[str]]) -> list[Score]:
        _, items = rouge_l(candidates, references)
        return [Score({"rouge_l": value}) for value in items]


class Cider(_CocoMetric):
    """CIDEr-D per item; document frequencies come from the references of all the samples
    scored in one call, so score a whole caption source at once (see module doc).

    >>> samples = [Sample(str(i), f"{i}.jpg", "final:short", c, [r]) for i, (c, r) in
    ...            enumerate([("a cat on a mat", "a cat on the mat"), ("a dog", "a big dog")])]
    >>> [round(s.values["cider"], 4) for s in Cider().score(samples, None)]
    [4.2484, 1.7434]
    """

    name = "cider"
    value_names = ("cider",)

    def _per_item(self, candidates: list[str], references: list[list[str]]) -> list[Score]:
        _, items = cider_d(candidates, references)
        return [Score({"cider": value}) for value in items]

    def corpus(self, samples: Sequence[Sample], scores: Sequence[Score]) -> dict[str, float]:
        """pycocoevalcap's CIDEr: the mean over the scored items (numpy's summation)."""
        return {"cider": _mean([s.values["cider"] for s in scores if s.failure is None])}
