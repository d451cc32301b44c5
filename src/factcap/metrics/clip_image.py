"""CLIP-Image-Score: how close an image drawn from the caption comes to the original image.

Definition, for an image ``I`` with caption ``c``::

    clip_image_score = (1 / k) * sum_{j=0}^{k-1} cos(E(I), E(G(c, seed + j)))

where ``G`` is the ``t2i`` backend (a diffusers pipeline such as SD-Turbo), ``G(c, s)`` the
image it draws from ``c`` with seed ``s``, and ``E`` the ``embedder``'s CLIP image tower
(unit rows). ``k`` is the ``samples`` option (default 1), ``seed`` the first seed (default 0).

- Scale: the raw cosine in [-1, 1], higher is better; no clamping, no rescaling.
- Seeds: the same ``seed .. seed + k - 1`` for every caption, so two captions of one image
  (the final caption and each proposal) are drawn from the same starting noise and differ
  only by their text. With the same models, device and dtype the score is reproducible.
- Long captions: the caption is the generator's *conditioning*, not scored text; the
  generator reads as much as its text encoder holds (77 CLIP tokens for SD / SDXL) and
  diffusers drops the rest. ``info["prompt_truncated"]`` says per item whether that happened
  (None when the backend cannot tell).
- ``info["seeds"]`` lists the seeds used, ``info["cosines"]`` the ``k`` cosines averaged.
- Failures (NaN and the reason): an original image that cannot be decoded, an empty caption.

Batched: the original images are embedded once each (shared with the other CLIP metrics);
every distinct (caption, seed) pair is drawn once, in ``t2i`` calls of ``batch_size`` images,
and each generated batch is embedded in one call.

>>> sample_seeds(10, 3)
[10, 11, 12]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from factcap.backends.options import check_int
from factcap.metrics.base import Metric, Sample, Score


def sample_seeds(seed: int, samples: int) -> list[int]:
    """The seeds of the ``samples`` images drawn per caption: ``seed, seed + 1, ...``.

    >>> sample_seeds(0, 2)
    [0, 1]
    """
    return [seed + j for j in range(samples)]


def mean_cosine(original: np.ndarray, generated: np.ndarray) -> tuple[float, list[float]]:
    """Mean cosine between one unit vector ``original`` (d,) and the unit rows of
    ``generated`` (k, d), and the ``k`` cosines.

    >>> mean_cosine(np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    (0.5, [1.0, 0.0])
    """
    cosines = [float(c) for c in np.asarray(generated, dtype=np.float64) @ np.asarray(original)]
    return sum(cosines) / len(cosines), cosines


class ClipImageScore(Metric):
    """Regenerates each caption's image ``samples`` times and compares it with the original in
    CLIP image space (definition in the module docstring).

    >>> from factcap.metrics import build
    >>> metric = build("clip_image_score", samples=2, seed=7)
    >>> metric.seeds
    [7, 8]
    """

    name = "clip_image_score"
    value_names = ("clip_image_score",)
    needs = frozenset({"image", "t2i", "embedder"})

    def __init__(self, samples: int = 1, seed: int = 0):
        check_int(type(self).__name__, "samples", samples, 1)
        check_int(type(self).__name__, "seed", seed, 0)
        self.samples = samples
        self.seed = seed

    @property
    def seeds(self) -> list[int]:
        """The seeds every caption is drawn with."""
        return sample_seeds(self.seed, self.samples)

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores: list[Score | None] = [None] * len(samples)
        originals = resources.image_embeddings([s.source for s in samples])
        todo: list[int] = []
        for i, (sample, vector) in enumerate(zip(samples, originals, strict=True)):
            if isinstance(vector, str):
                scores[i] = Score.failed(self.value_names, vector)
            elif not sample.caption.strip():
                scores[i] = Score.failed(self.value_names, "empty caption")
            else:
                todo.append(i)
        if todo:
            captions = list(dict.fromkeys(samples[i].caption for i in todo))
            generated, truncated = self._generate(captions, resources)
            for i in todo:
                caption = samples[i].caption
                rows = np.stack([generated[(caption, s)] for s in self.seeds])
                value, cosines = mean_cosine(originals[i], rows)
                if not math.isfinite(value):
                    scores[i] = Score.failed(self.value_names, "non-finite image embedding")
                    continue
                info = {
                    "seeds": self.seeds,
                    "cosines": cosines,
                    "prompt_truncated": truncated[caption],
                }
                scores[i] = Score({"clip_image_score": value}, info=info)
        return [s for s in scores if s is not None]

    def _generate(
        self, captions: list[str], resources: Any
    ) -> tuple[dict[tuple[str, int], np.ndarray], dict[str, bool | None]]:
        """Unit CLIP embeddings of every (caption, seed) image, drawn and embedded in batches;
        and whether the generator truncated each caption."""
        t2i = resources.get("t2i")
        embedder = resources.get("embedder")
        jobs = [(caption, seed) for caption in captions for seed in self.seeds]
        vectors: dict[tuple[str, int], np.ndarray] = {}
        size = resources.batch_size
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            images = t2i.generate([c for c, _ in chunk], [s for _, s in chunk])
            rows = embedder.embed_images(images)
            for job, row in zip(chunk, rows, strict=True):
                vectors[job] = np.asarray(row, dtype=np.float32)
        check = getattr(t2i, "prompt_truncated", None)
        flags = check(captions) if callable(check) else [None] * len(captions)
        return vectors, dict(zip(captions, flags, strict=True))
