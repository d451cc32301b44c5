"""Region CLIP-Score: how well each region caption (``factcap caption --regions``) matches its
crop of the image.

For every region of a record with a caption and a usable box, the crop is cut from the
decoded image **padded like the pipeline cut it** (``padding`` of the box's width and height
on every side, clipped to the image, :func:`factcap.boxes.pad`; default 0.1, the pipeline's
``regions.padding`` default), because that crop is what the region's caption was written and
checked from; ``padding=0`` scores against the bare detector box. Each region gets CLIP-S
(Hessel et al.: ``w · max(cos(crop, caption), 0)``, ``w = 2.5``), with long captions split
and averaged exactly as :mod:`factcap.metrics.clip_score` does.

Values per image (macro-averaged: every image counts once in the summary, however many
regions it has):

- ``region_clip_score``: the mean CLIP-S of its regions;
- ``region_clip_cosine``: the mean cosine;
- ``region_count``: how many regions were scored.

The score's ``info`` has ``region_clip_scores`` (region id → its CLIP-S). A region without a
caption or a usable box is left out; an image with no regions fails with "no regions", one
whose regions have no caption or box with "no region captions". Region captions belong to the
record, not to one caption source: they are scored on the ``final:<style>`` samples (the same
values under each style) and a ``proposal:`` sample fails saying so.

Boxes are the region's ``box`` (pixels of the decoded image, as factcap writes it), else its
``box_normalised`` (fractions), for rows from other tools. Options (``evaluate.options:
{region_clip_score: {padding: 0.0}}`` in the config): ``w``, ``prefix``, ``window_overlap`` as
for ``clip_score``, and ``padding``.

>>> region_box({"box": [10, 20, 50, 80]})
((10.0, 20.0, 50.0, 80.0), False)
>>> region_box({"box_normalised": [0.1, 0.1, 0.5, 0.4]})
((0.1, 0.1, 0.5, 0.4), True)
>>> region_box({"box": [50, 20, 10, 80]}) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from factcap.metrics.base import Metric, Sample, Score
from factcap.metrics.clip_score import W, check_options, clip_s, embed_split_texts

#: The pipeline's default crop padding (``regions.padding``).
DEFAULT_PADDING = 0.1


def region_box(region: dict[str, Any]) -> tuple[tuple[float, ...], bool] | None:
    """The region's box and whether it is normalised: its pixel ``box``, else its
    ``box_normalised``; None when neither is four finite numbers with x1 > x0 and y1 > y0."""
    for key, normalised in (("box", False), ("box_normalised", True)):
        box = region.get(key)
        if (
            isinstance(box, (list, tuple))
            and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            and all(math.isfinite(v) for v in box)
        ):
            values = tuple(float(v) for v in box)
            if values[2] > values[0] and values[3] > values[1]:
                return values, normalised
            return None
    return None


def mean_region_scores(cosines: Sequence[float], w: float = W) -> dict[str, float]:
    """The per-image values from the regions' cosines (at least one).

    >>> mean_region_scores([0.5, -0.25])
    {'region_clip_score': 0.625, 'region_clip_cosine': 0.125, 'region_count': 2.0}
    """
    if not cosines:
        raise ValueError("no region cosines")
    n = len(cosines)
    return {
        "region_clip_score": sum(clip_s(c, w) for c in cosines) / n,
        "region_clip_cosine": sum(float(c) for c in cosines) / n,
        "region_count": float(n),
    }


class RegionClipScore(Metric):
    """CLIP-S of each region caption against its (padded) crop, mean per image (module
    docstring).

    >>> from factcap.metrics import build
    >>> build("region_clip_score", padding=0.0).value_names
    ('region_clip_score', 'region_clip_cosine', 'region_count')
    """

    name = "region_clip_score"
    value_names = ("region_clip_score", "region_clip_cosine", "region_count")
    needs = frozenset({"image", "embedder"})

    def __init__(
        self,
        *,
        w: float = W,
        prefix: str = "",
        window_overlap: float = 0.25,
        padding: float = DEFAULT_PADDING,
    ):
        check_options(w, prefix, window_overlap)
        if isinstance(padding, bool) or not isinstance(padding, (int, float)):
            raise TypeError(f"padding must be a number, got {type(padding).__name__}")
        if not 0.0 <= padding <= 2.0:
            raise ValueError(f"padding must be in [0, 2], got {padding!r}")
        self.w, self.prefix = float(w), prefix
        self.window_overlap, self.padding = float(window_overlap), float(padding)

    def _fail(self, reason: str) -> Score:
        return Score.failed(self.value_names, reason)

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        if not resources.available("embedder"):
            reason = "no embedder (CLIP) model is configured for evaluation"
            return [self._fail(reason) for _ in samples]
        scores: list[Score | None] = []
        plans: list[list[tuple[str, tuple[float, ...], str]]] = []
        crops: list[list[np.ndarray]] = []
        for sample in samples:
            plan: list[tuple[str, tuple[float, ...], str]] = []
            vectors: list[np.ndarray] = []
            result: Score | None = None
            if not sample.caption_source.startswith("final:"):
                result = self._fail(
                    "region captions belong to the record: scored with the final captions"
                )
            elif not sample.regions:
                result = self._fail("no regions")
            else:
                pixels, fractions = [], []
                for k, region in enumerate(sample.regions):
                    caption = str(region.get("caption") or "").strip()
                    found = region_box(region)
                    if caption and found is not None:
                        rid = str(region.get("id", f"r{k}"))
                        (fractions if found[1] else pixels).append((rid, found[0], caption))
                plan = pixels + fractions
                if not plan:
                    result = self._fail("no region captions")
                for group, normalised in ((pixels, False), (fractions, True)):
                    if group and result is None:
                        got = resources.crop_embeddings(
                            sample.source, [b for _, b, _ in group], self.padding, normalised
                        )
                        if isinstance(got, str):
                            result = self._fail(got)
                        else:
                            vectors.extend(got)
                if result is not None:
                    plan, vectors = [], []
            scores.append(result)
            plans.append(plan)
            crops.append(vectors)
        texts = [caption for plan in plans for _, _, caption in plan]
        embedded = embed_split_texts(texts, resources, self.prefix, self.window_overlap)
        start = 0
        for i, (plan, vectors) in enumerate(zip(plans, crops, strict=True)):
            if scores[i] is not None:
                continue
            cosines = [
                float(text.vector @ vector.astype(np.float64))
                for text, vector in zip(embedded[start : start + len(plan)], vectors, strict=True)
            ]
            start += len(plan)
            scores[i] = Score(
                mean_region_scores(cosines, self.w),
                info={
                    "region_clip_scores": {
                        rid: round(clip_s(c, self.w), 6)
                        for (rid, _, _), c in zip(plan, cosines, strict=True)
                    }
                },
            )
        return [s for s in scores if s is not None]
