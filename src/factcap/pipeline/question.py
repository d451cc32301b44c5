"""Question-guided captions (``--question``): a caption that answers the item's question,
and a check of that answer against the image (``question:answer``, ``question:check``).

README: "Captions that answer a question" has what an item with a question gets and what
each field of the record's ``question.answer`` means. The question comes from the item's own field
(``question.field``) or ``question.text``, and is set when the item is read
(:func:`prepare_record`).

>>> from factcap.schema import Record
>>> from factcap.config import QuestionConfig
>>> r = Record("a", "a.jpg", extra={"question": "  What is   on the sofa? "})
>>> set_question(r, QuestionConfig(text="Is it day?", field="question")); r.question.text
'What is on the sofa?'
>>> check_question("What is on the sofa?", 'a "grey" cat')
'What is on the sofa? Is the answer "a \\'grey\\' cat"?'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from factcap.config import Config, QuestionConfig
from factcap.pipeline.check import ask_once
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, live
from factcap.prompts import answer_prompt, load_prompt
from factcap.prompts.style import Style, added_by
from factcap.schema import Record
from factcap.text.answers import is_yes_no, short_answer, yes_no

#: The caption style the answer is read from.
QUESTION_STYLE = "question"
#: Added to a captioner's spec in the ``model`` of its question-guided proposal.
PROPOSAL_SUFFIX = " (question)"
#: What a captioner that takes a prompt is asked for an item with a question.
CAPTIONER_PROMPT = (
    "Describe this image in detail, making sure to cover what is needed to answer this "
    "question: {question}"
)
#: Tokens the LLM may use for its short answer.
ANSWER_TOKENS = 32


#: The config section that decides what this stage writes (compared on ``--resume``).
SETTINGS = ("question",)


def stages(config: Config) -> list[Stage]:
    """``question:answer`` (LLM) and ``question:check`` (VQA; not with ``--no-verify``) when
    items can have a question (``question.text`` or ``question.field``)."""
    if not config.question.enabled:
        return []
    out = [Stage("question:answer", "llm", run_answer)]
    if config.verify.enabled:
        out.append(Stage("question:check", "vqa" if config.vqa is not None else None, run_check))
    return out


def question_of(record: Record, cfg: QuestionConfig) -> str | None:
    """The item's question (module docstring), whitespace tidied, or None."""
    value: Any = record.extra.get(cfg.field) if cfg.field else None
    if value is None and cfg.field and isinstance(record.extra.get("json"), dict):
        value = record.extra["json"].get(cfg.field)
    text = " ".join(value.split()) if isinstance(value, str) else ""
    return text or (" ".join(cfg.text.split()) if cfg.text else None)


def prepare_record(record: Record, config: Config) -> None:
    """When questions are on, the item's question goes in its record as soon as it is read
    (the caption stages ask it)."""
    if config.question.enabled:
        set_question(record, config.question)


def set_question(record: Record, cfg: QuestionConfig) -> None:
    """Put the item's question in ``record.question.text`` (cut to ``max_chars``, with a note)."""
    text = question_of(record, cfg)
    if text and len(text) > cfg.max_chars:
        text = text[: cfg.max_chars].rsplit(" ", 1)[0] or text[: cfg.max_chars]
        record.notes.append(f"question: cut to {cfg.max_chars} characters")
    record.question.text = text


def captioner_prompt(question: str) -> str:
    """The prompt of a question-guided proposal (the question as one quoted string).

    >>> captioner_prompt("Is the cat asleep?")
    'Describe this image in detail, making sure to cover what is needed to answer this question: "Is the cat asleep?"'
    """
    return CAPTIONER_PROMPT.format(question=json.dumps(question, ensure_ascii=False))


def accepts_prompt(captioner: Any) -> bool:
    """Whether a captioner's ``prompt`` argument steers its caption (``accepts_prompt``)."""
    return bool(getattr(captioner, "accepts_prompt", False))


def check_question(question: str, answer: str) -> str:
    """The VQA model's question for an open question's answer (module docstring)."""
    quoted = " ".join(answer.replace('"', "'").split())
    return f'{question} Is the answer "{quoted}"?'


def question_style(record: Record, styles: Mapping[str, Style]) -> str | None:
    """The caption style the answer is read from: ``question``, else the first style a
    question adds that the record has."""
    names = [QUESTION_STYLE, *added_by(styles, "question")]
    return next((n for n in names if record.captions.get(n)), None)


def parse_answer(text: str, yes_no_question: bool) -> str | None:
    """The LLM's short answer (:func:`factcap.text.answers.short_answer`); ``yes`` / ``no``
    for a yes/no question answered so; None when it says the caption does not tell.

    >>> parse_answer("Answer: Yes, it is.", True), parse_answer("Unknown.", False)
    ('yes', None)
    >>> parse_answer('"A grey cat."\\nBecause ...', False)
    'A grey cat'
    """
    answer = short_answer(text)
    if answer is not None and yes_no_question and yes_no(answer):
        return yes_no(answer)
    return answer


def run_answer(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The LLM answers each item's question from its ``question`` caption alone."""
    cfg = context.config
    known = cfg.style_registry()
    items = [
        (w, style)
        for w in live(batch)
        if w.record.question and (style := question_style(w.record, known))
    ]
    if model is None or not items:
        return
    template = load_prompt("answer", cfg.prompts)
    conversations = [
        [
            {
                "role": "user",
                "content": answer_prompt(
                    w.record.captions[s], str(w.record.question.text), template
                ),
            }
        ]
        for w, s in items
    ]
    try:
        answers = model.backend.chat(
            conversations,
            max_new_tokens=min(ANSWER_TOKENS, cfg.llm.max_new_tokens),
            temperature=cfg.llm.temperature,
        )
    except Exception as err:  # the captions stand; the record says why nothing was read
        answers = [None] * len(items)
        for w, _ in items:
            w.record.notes.append(f"answer: the LLM failed ({type(err).__name__}: {err})"[:300])
    for (w, style), text in zip(items, answers, strict=True):
        yes_no_question = is_yes_no(str(w.record.question.text))
        answer = None if text is None else parse_answer(text, yes_no_question)
        w.record.question.answer = {
            "style": style,
            "llm_answer": answer,
            "answered": answer is not None,
            "yes_no": yes_no_question,
            "vqa_question": None,
            "vqa_p_yes": None,
            "vqa_answer": None,
            "agrees": None,
        }
        if answer is None and text is not None:
            w.record.notes.append(
                f"answer: the {style} caption does not answer the question (the LLM reading "
                "it could not tell)"
            )


def run_check(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The VQA model checks each caption's answer against the image (module docstring)."""
    verify = context.config.verify
    todo: list[tuple[Work, str]] = []
    for w in live(batch):
        answer = w.record.question.answer
        if not answer or not w.record.question:
            continue
        if answer["yes_no"]:
            todo.append((w, str(w.record.question.text)))
        elif answer["llm_answer"] is not None:
            todo.append((w, check_question(str(w.record.question.text), answer["llm_answer"])))
    if model is None or not todo:
        return
    asks = [(image, q) for w, q in todo for image in w.images]
    try:
        probs = iter(ask_once(model.backend, model.batch_size, asks))
    except Exception as err:  # the answer stays unchecked; the record says why
        for w, _ in todo:
            w.record.notes.append(f"answer: the VQA check failed ({type(err).__name__})")
        return
    for w, question in todo:
        answered = [p for p in (next(probs) for _ in w.images) if p == p]
        _apply(w.record, question, w.kind.combine(answered) if answered else None, verify)


def _apply(record: Record, question: str, p: float | None, verify: Any) -> None:
    answer = record.question.answer
    answer["vqa_question"] = question
    answer["vqa_p_yes"] = None if p is None else round(p, 4)
    decided = p is not None and (p >= verify.supported_threshold or p <= verify.refuted_threshold)
    if answer["yes_no"]:
        answer["vqa_answer"] = None if p is None else ("yes" if p >= 0.5 else "no")
        mine = answer["llm_answer"] if answer["llm_answer"] in ("yes", "no") else None
        answer["agrees"] = (mine == answer["vqa_answer"]) if decided and mine else None
    else:
        answer["agrees"] = (p >= verify.supported_threshold) if decided and p is not None else None
    if answer["agrees"] is False:
        record.notes.append(
            f"answer: the VQA model does not confirm the {answer['style']} caption's answer "
            f"{answer['llm_answer']!r} (P(yes) {answer['vqa_p_yes']})"
        )
