"""Question-guided accuracy: does the caption let an LLM answer the question correctly?

Definition: the evaluation LLM (role ``llm``) reads only the caption and answers the question
about the image (the ``answer`` prompt, :func:`factcap.prompts.answer_prompt`: the same one
the pipeline's answer check asks); ``question_accuracy`` is 1 when its answer matches a
reference answer and 0 otherwise, "unknown" included (the caption did not tell). Matching
(:func:`factcap.text.answers.answers_match`): both answers normalised (lower case,
punctuation and articles dropped, number words as digits); equal, or, for a yes/no reference,
the same first word, or the reference's words inside the answer with no negation before them
("dark red" matches "red", "not red" does not). Any of several reference answers is enough.
The mean over images is the accuracy.

The question is the references' ``question`` for that image, else the record's own
(``factcap caption --question``); the reference answers are the references' ``answer`` (a
string or a list). A sample without a question, without a reference answer, or with an empty
caption fails with that reason (never a 0). ``info.llm_answer`` keeps what the LLM answered.

Options: ``max_new_tokens`` (32), ``template`` (a file replacing the ``answer`` prompt).

>>> accuracy("a red sofa", ["red"]), accuracy("unknown", ["red"]), accuracy("Yes.", ["yes"])
(1.0, 0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factcap.metrics.base import Metric, Sample, Score
from factcap.prompts import answer_prompt, read_override
from factcap.text.answers import answers_match, short_answer


def accuracy(answer: str | None, references: Sequence[str]) -> float:
    """1.0 when the LLM's reply ``answer`` (its short answer) matches one of
    ``references``, else 0.0 (module docstring)."""
    return 1.0 if answers_match(short_answer(answer), references) else 0.0


class QuestionAccuracy(Metric):
    """Asks the ``llm`` role each sample's question from its caption alone, batched, and
    scores the answer against the reference answers."""

    name = "question_accuracy"
    value_names = ("question_accuracy",)
    needs = frozenset({"answers", "llm"})

    def __init__(self, max_new_tokens: int = 32, template: str | None = None):
        self.max_new_tokens = int(max_new_tokens)
        self.template = read_override("answer", template) if template else None

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores: list[Score | None] = [None] * len(samples)
        todo: list[int] = []
        for i, sample in enumerate(samples):
            if not sample.question:
                reason = (
                    "no question: give one in the references (question) or caption with --question"
                )
                scores[i] = Score.failed(self.value_names, reason)
            elif not sample.answers:
                scores[i] = Score.failed(
                    self.value_names, "no reference answer for this image (answer in --references)"
                )
            elif not sample.caption.strip():
                scores[i] = Score.failed(self.value_names, "empty caption")
            else:
                todo.append(i)
        if todo:
            try:
                llm = resources.get("llm")
            except KeyError as err:  # no LLM: the samples it would have read say so
                for i in todo:
                    scores[i] = Score.failed(self.value_names, str(err.args[0]))
                return [s for s in scores if s is not None]
            for start in range(0, len(todo), resources.batch_size):
                chunk = todo[start : start + resources.batch_size]
                conversations = [
                    [
                        {
                            "role": "user",
                            "content": answer_prompt(
                                samples[i].caption, str(samples[i].question), self.template
                            ),
                        }
                    ]
                    for i in chunk
                ]
                replies = llm.chat(
                    conversations, max_new_tokens=self.max_new_tokens, temperature=0.0
                )
                for i, reply in zip(chunk, replies, strict=True):
                    value = accuracy(reply, samples[i].answers)
                    info = {"llm_answer": short_answer(reply)}
                    scores[i] = Score({"question_accuracy": value}, info=info)
        return [s for s in scores if s is not None]
