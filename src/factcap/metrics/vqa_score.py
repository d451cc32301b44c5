"""VQAScore (Lin et al., 2024): how strongly a VQA model agrees that the image shows the caption.

Definition: ``vqa_score = P("yes" | image, 'Does this figure show "<caption>"?')`` from the VQA
backend's logits (or an ``openai:`` server's logprobs), renormalised over "yes"/"no" as every
factcap judge does (see :class:`factcap.roles.VQA`); the backend appends its own
answer instruction (chat judges: "Answer yes or no."). In [0, 1]; higher is better. The
caption is quoted as written, never truncated by factcap (a backend's own tokenizer limit
still applies). A NaN from the backend (no usable answer) is a failure with that reason.

>>> vqa_question('A cat "on" a mat.')
'Does this figure show "A cat \\'on\\' a mat."?'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from factcap.metrics.base import Metric, Sample, Score
from factcap.prompts import CAPTION_QUESTION, caption_question

TEMPLATE = CAPTION_QUESTION
vqa_question = caption_question  # the question asked for a caption


class VQAScore(Metric):
    """P(yes) of "Does this figure show <caption>?" per sample, batched through the VQA role."""

    name = "vqa_score"
    value_names = ("vqa_score",)
    needs = frozenset({"image", "vqa"})

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores: list[Score | None] = [None] * len(samples)
        vqa = resources.get("vqa")  # KeyError without one: every sample says so
        views = [resources.load_views(s.source) for s in samples]  # a photo: one image
        asks: list[tuple[int, Any]] = []
        for i, (sample, images) in enumerate(zip(samples, views, strict=True)):
            if isinstance(images, str):
                scores[i] = Score.failed(self.value_names, images)
            elif not sample.caption.strip():
                scores[i] = Score.failed(self.value_names, "empty caption")
            else:
                asks.extend((i, image) for image in images)
        answers: dict[int, list[float]] = {}
        for start in range(0, len(asks), resources.batch_size):
            chunk = asks[start : start + resources.batch_size]
            probs = vqa.yes_probability(
                [image for _, image in chunk], [vqa_question(samples[i].caption) for i, _ in chunk]
            )
            for (i, _), p in zip(chunk, probs, strict=True):
                answers.setdefault(i, []).append(float(p))
        for i, ps in answers.items():
            finite = [p for p in ps if math.isfinite(p)]
            if len(finite) < len(ps):
                scores[i] = Score.failed(self.value_names, "the VQA model gave no yes/no answer")
            elif len(ps) == 1:
                scores[i] = Score({"vqa_score": finite[0]})
            else:  # an input of several views (a 3D asset): the mean over them
                info = {"vqa_score_by_view": [round(p, 4) for p in finite]}
                scores[i] = Score({"vqa_score": sum(finite) / len(finite)}, info=info)
        return [s for s in scores if s is not None]
