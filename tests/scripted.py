"""Scripted backends: the far side of the role boundary, for testing the pipeline's own logic.

They implement the role protocols exactly (batched calls, one result per item) and record
every call, so tests can assert on what the pipeline asked and how often.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from factcap.roles import Detection, TextSpan


class ScriptedCaptioner:
    def __init__(self, name: str, text: str | Callable[[int], str]):
        self.name, self._text, self.calls = name, text, []

    def caption(self, images, prompt=None):
        self.calls.append(len(images))
        return [self._text(i) if callable(self._text) else self._text for i in range(len(images))]


class ScriptedLLM:
    """Answers claim-extraction prompts with ``claims_answer`` and compose prompts with
    ``caption_answer`` (strings, or functions of the prompt text)."""

    name = "scripted-llm"

    def __init__(self, claims_answer, caption_answer="A caption.", repair_answer=None):
        self.claims_answer, self.caption_answer = claims_answer, caption_answer
        self.repair_answer = repair_answer
        self.calls: list[list] = []

    def chat(self, conversations, max_new_tokens=256, temperature=0.0):
        self.calls.append(list(conversations))
        out = []
        for conv in conversations:
            prompt = conv[-1]["content"]
            if len(conv) > 1 and self.repair_answer is not None:
                answer = self.repair_answer
            elif "checkable claims" in conv[0]["content"]:
                answer = self.claims_answer
            else:
                answer = self.caption_answer
            out.append(answer(prompt) if callable(answer) else answer)
        return out


class ScriptedDetector:
    """Finds exactly the queries in ``present`` (one box each, or ``boxes[q]`` boxes)."""

    name = "scripted-detector"

    def __init__(self, present: Sequence[str], boxes: dict[str, int] | None = None):
        self.present, self.boxes, self.calls = set(present), boxes or {}, []

    def detect(self, images, queries):
        self.calls.append([list(q) for q in queries])
        out = []
        for image, qs in zip(images, queries, strict=True):
            w, h = image.size
            out.append(
                [
                    Detection(query=q, score=0.9, box=(1.0, 2.0, w - 1.0, h - 2.0))
                    for q in qs
                    if q in self.present
                    for _ in range(self.boxes.get(q, 1))
                ]
            )
        return out


class ScriptedVQA:
    name = "scripted-vqa"

    def __init__(self, answer: Callable[[str], float]):
        self.answer, self.calls = answer, []

    def yes_probability(self, images, questions):
        self.calls.append(list(questions))
        return [self.answer(q) for q in questions]


class ScriptedOCR:
    name = "scripted-ocr"

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)

    def read(self, images):
        return [
            [TextSpan(text=t, score=0.99, box=(0, 0, 10, 10)) for t in self.texts] for _ in images
        ]


class Exploding:
    """A backend whose every call raises, like a server that went away."""

    name = "exploding"

    def __init__(self, exc: Exception):
        self.exc = exc

    def caption(self, images, prompt=None):
        raise self.exc

    detect = yes_probability = chat = read = caption


def scripted_pipeline(config, caption: str = "A grey cat sits on a sofa."):
    """A :class:`~factcap.pipeline.Pipeline` of ``config`` whose models are scripted: two
    captioners, an LLM that claims a cat and writes ``caption``, a detector that finds cats,
    a VQA model that says yes."""
    from factcap.pipeline import Pipeline
    from factcap.pipeline.models import Models

    claims = '[{"kind": "object", "text": "There is a cat.", "subject": "cat"}]'
    built = {
        "captioner:0": (ScriptedCaptioner("cap-a", "A grey cat on a red sofa."), 4),
        "captioner:1": (ScriptedCaptioner("cap-b", "A cat."), 4),
        "llm": (ScriptedLLM(claims, caption), 4),
        "detector": (ScriptedDetector(["cat"]), 4),
        "vqa": (ScriptedVQA(lambda q: 0.9), 4),
    }
    return Pipeline(config, models=Models(config, built=built))


class ScriptedGrader:
    """The ``judge`` role: answers each prompt with ``answer(prompt)`` (text only, no token
    probabilities, like a server without logprobs) and records the prompts."""

    name = "scripted-grader"

    def __init__(self, answer: Callable[[str], str]):
        self.answer, self.calls = answer, []

    def generate(self, images, prompts, max_new_tokens=128):
        from factcap.roles import Generation

        self.calls.append(list(prompts))
        return [Generation(self.answer(p)) for p in prompts]
