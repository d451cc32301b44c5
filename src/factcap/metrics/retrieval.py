"""Self-retrieval: does a caption find its own image among the others, in CLIP space?

Definition: for one caption source, the *gallery* is every distinct image of the evaluated
samples (distinct ``source`` paths that decode), plus the ``distractors`` given as options.
Each caption is a query; images are ranked by cosine with it (highest first), and its
``rank`` is the number of *other* gallery images whose cosine is at least its own image's
(ties count against the caption; 0 = retrieved first). Per item,
``self_retrieval_r1`` = 1.0 if rank < 1 else 0.0 and ``self_retrieval_r5`` = 1.0 if rank < 5;
their means over the items are recall@1 and recall@5. Captions are embedded exactly as for
``clip_score``: never truncated, a long caption split into pieces that fit, its embedding the
mean of the pieces' unit embeddings (ranking is unaffected by its norm).

recall@k is only informative when the gallery has more than k images (with k or fewer every
caption trivially "retrieves" its image): then it is NaN with that reason, never a free 1.0.
Recall falls as the gallery grows, so each score's ``info`` carries the gallery size
(``self_retrieval_gallery_size``, also a corpus value of the summary) and the caption's
``self_retrieval_rank``: compare recalls only over galleries of the same size. A caption
whose image does not decode, or that is empty, is a failure (NaN with the reason).

>>> import numpy as np
>>> images = np.eye(3)
>>> recall_at_k(images, images, [0, 1, 2], ks=(1,))
{1: 1.0}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from factcap.metrics.base import NAN, Metric, Sample, Score
from factcap.metrics.clip_score import W, check_options, embed_split_texts

log = logging.getLogger(__name__)

KS = (1, 5)


def retrieval_ranks(
    text_emb: np.ndarray, image_emb: np.ndarray, targets: Sequence[int]
) -> np.ndarray:
    """0-based rank of each query's target image among ``image_emb`` by dot product:
    how many other images score at least as high (ties count against the query).

    ``text_emb`` is ``(queries, dim)``, ``image_emb`` ``(images, dim)``, ``targets[q]`` the
    row of query ``q``'s own image.

    >>> texts = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> retrieval_ranks(texts, np.array([[1.0, 0.0], [0.6, 0.8]]), [0, 1]).tolist()
    [0, 1]
    """
    text = np.atleast_2d(np.asarray(text_emb, dtype=np.float64))
    image = np.atleast_2d(np.asarray(image_emb, dtype=np.float64))
    targets = np.asarray(targets, dtype=np.int64)
    if text.shape[0] != targets.shape[0]:
        raise ValueError(f"got {text.shape[0]} queries but {targets.shape[0]} targets")
    if targets.size and (targets.min() < 0 or targets.max() >= image.shape[0]):
        raise ValueError(f"targets must index the {image.shape[0]} images")
    sims = text @ image.T
    own = sims[np.arange(len(targets)), targets][:, None]
    return (sims >= own).sum(axis=1) - 1


def recall_at_k(
    text_emb: np.ndarray,
    image_emb: np.ndarray,
    targets: Sequence[int],
    ks: Sequence[int] = KS,
) -> dict[int, float]:
    """recall@k for each k: the share of queries whose own image ranks in the top k
    (:func:`retrieval_ranks`).

    >>> texts = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> recall_at_k(texts, np.array([[1.0, 0.0], [0.6, 0.8]]), [0, 1], ks=(1, 2))
    {1: 0.5, 2: 1.0}
    """
    ranks = retrieval_ranks(text_emb, image_emb, targets)
    return {int(k): float((ranks < k).mean()) if ranks.size else NAN for k in ks}


class SelfRetrieval(Metric):
    """recall@1 / recall@5 of each caption retrieving its own image (module docstring).

    Called with one caption source's samples at a time; the gallery is their distinct images
    plus ``distractors`` (image paths). Options: ``distractors`` (()), ``prefix`` and
    ``window_overlap`` (as for ``clip_score``).

    >>> SelfRetrieval(distractors=["extra.jpg"]).value_names
    ('self_retrieval_r1', 'self_retrieval_r5')
    """

    name = "self_retrieval"
    value_names = ("self_retrieval_r1", "self_retrieval_r5")
    needs = frozenset({"image", "embedder"})

    def __init__(
        self, *, distractors: Sequence[str] = (), prefix: str = "", window_overlap: float = 0.25
    ):
        if isinstance(distractors, str):
            raise TypeError("distractors must be a list of image paths, not one string")
        check_options(W, prefix, window_overlap)
        self.distractors = [str(d) for d in distractors]
        self.prefix = prefix
        self.window_overlap = float(window_overlap)

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        if not resources.available("embedder"):
            reason = "no embedder (CLIP) model is configured for evaluation"
            return [Score.failed(self.value_names, reason) for _ in samples]
        sources = list(dict.fromkeys([s.source for s in samples] + self.distractors))
        vectors = dict(zip(sources, resources.image_embeddings(sources), strict=True))
        gallery = [s for s in sources if not isinstance(vectors[s], str)]
        for bad in (d for d in self.distractors if isinstance(vectors[d], str)):
            log.warning("self_retrieval: distractor %s left out: %s", bad, vectors[bad])
        row = {s: i for i, s in enumerate(gallery)}

        scores: list[Score | None] = []
        for sample in samples:
            vector = vectors[sample.source]
            if isinstance(vector, str):
                scores.append(Score.failed(self.value_names, vector))
            elif not sample.caption.strip():
                scores.append(Score.failed(self.value_names, "empty caption"))
            else:
                scores.append(None)
        todo = [i for i, s in enumerate(scores) if s is None]
        if todo:
            texts = embed_split_texts(
                [samples[i].caption for i in todo], resources, self.prefix, self.window_overlap
            )
            ranks = retrieval_ranks(
                np.stack([t.vector for t in texts]),
                np.stack([vectors[s] for s in gallery]),
                [row[samples[i].source] for i in todo],
            )
            size = len(gallery)
            trivial = [k for k in KS if size <= k]
            reason = (
                f"recall@{','.join(map(str, trivial))} needs more than "
                f"{max(trivial)} images to rank, the gallery has {size}"
                if trivial
                else None
            )
            for i, rank, text in zip(todo, ranks, texts, strict=True):
                values = {f"self_retrieval_r{k}": NAN if size <= k else float(rank < k) for k in KS}
                info = {
                    **text.info(),
                    "self_retrieval_rank": int(rank),
                    "self_retrieval_gallery_size": size,
                }
                scores[i] = Score(values, failure=reason, info=info)
        return [s for s in scores if s is not None]

    def corpus(self, samples: Sequence[Sample], scores: Sequence[Score]) -> dict[str, float]:
        """The gallery size the recalls were measured against."""
        sizes = {s.info.get("self_retrieval_gallery_size") for s in scores} - {None}
        return {"self_retrieval_gallery_size": float(max(sizes))} if sizes else {}
