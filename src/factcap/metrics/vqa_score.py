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

TEMPLATE = 'Does this figure show "{caption}"?'


def vqa_question(caption: str) -> str:
    """The question asked for ``caption`` (its double quotes become single quotes)."""
    return TEMPLATE.format(caption=" ".join(caption.replace('"', "'").split()))


class VQAScore(Metric):
    """P(yes) of "Does this figure show <caption>?" per sample, batched through the VQA role."""

    name = "vqa_score"
    value_names = ("vqa_score",)
    needs = frozenset({"image", "vqa"})

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores: list[Score | None] = [None] * len(samples)
        images = resources.load_images([s.source for s in samples])
        todo = []
        for i, (sample, image) in enumerate(zip(samples, images, strict=True)):
            if isinstance(image, str):
                scores[i] = Score.failed(self.value_names, image)
            elif not sample.caption.strip():
                scores[i] = Score.failed(self.value_names, "empty caption")
            else:
                todo.append(i)
        vqa = resources.get("vqa")
        size = resources.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            probs = vqa.yes_probability(
                [images[i] for i in chunk], [vqa_question(samples[i].caption) for i in chunk]
            )
            for i, p in zip(chunk, probs, strict=True):
                p = float(p)
                scores[i] = (
                    Score({"vqa_score": p})
                    if math.isfinite(p)
                    else Score.failed(self.value_names, "the VQA model gave no yes/no answer")
                )
        return [s for s in scores if s is not None]
