"""Stages ``caption:<i>``, propose: each captioner writes a caption for every image.

One stage per configured captioner, so each can run in its own worker (and pool of
actors on Ray). The text becomes a proposal ``{"model": <spec>, "text": ...}``; a 3D asset
gets one proposal per view the captioners see (``assets.caption_views``), with its ``view``.
An item with a question (``--question``) gets one more proposal from each captioner that
takes a prompt, ``{"model": "<spec> (question)", ...}`` (:mod:`factcap.pipeline.question`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from factcap.config import Config
from factcap.pipeline.question import PROPOSAL_SUFFIX, accepts_prompt, captioner_prompt
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, failing, live
from factcap.roles import slot
from factcap.schema import Proposal
from factcap.text.english import clean_text


def stages(config: Config) -> list[Stage]:
    """One ``caption:<i>`` stage per captioner."""
    return [
        Stage(
            f"caption:{i}",
            slot("captioner", i),
            run,
            fails_as="captioner {model} failed",
            timing="caption:{model}",
        )
        for i in range(len(config.captioners))
    ]


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Fill in this captioner's proposal for the live items of ``batch``.

    A captioner that raises fails the items of this batch (:func:`~factcap.pipeline.stage.
    run_stage`); a question-guided call that raises fails that question's items. Without a
    model (not served) the stage does nothing.
    """
    items = live(batch)
    if model is None or not items:
        return
    captioner, size = model
    propose(items, captioner, size, context.config)
    if accepts_prompt(captioner):
        question_proposals(live(items), captioner, size, context.config)


def propose(
    items: Sequence[Work],
    captioner: Any,
    size: int | None,
    config: Config,
    prompt: str | None = None,
) -> None:
    """Append ``captioner``'s proposal for each item (each view its media kind captions), asked
    with ``prompt`` when given (its proposals then named ``<spec> (question)``)."""
    suffix = PROPOSAL_SUFFIX if prompt else ""
    caption = captioner.caption if prompt is None else partial(captioner.caption, prompt=prompt)
    jobs = [(w, view, image) for w in items for view, image in caption_images(w, config)]
    texts = call_batched(caption, size, [image for _, _, image in jobs])
    for (w, view, _), text in zip(jobs, texts, strict=True):
        w.record.proposals.append(Proposal(captioner.name + suffix, clean_text(text), view))


def question_proposals(
    items: Sequence[Work], captioner: Any, size: int | None, config: Config
) -> None:
    """The question-guided proposal of each item with a question: one call per distinct
    question (the prompt is one per call), a failure failing that question's items."""
    by_question: dict[str, list[Work]] = {}
    for w in items:
        if text := w.record.question.text:
            by_question.setdefault(text, []).append(w)
    for question, group in by_question.items():
        with failing(group, f"captioner {captioner.name} failed (question)"):
            propose(group, captioner, size, config, captioner_prompt(question))


def caption_images(work: Work, config: Config) -> list[tuple[int | None, Any]]:
    """``(view index, image)`` pairs a captioner sees for one item: each of its views that
    its media kind has captioned (all, or an asset's ``caption_views``); a photo's one view
    has no index."""
    wanted = work.kind.caption_views(config)
    return [
        (v.index, v.image)
        for v in work.views
        if wanted is None or v.index is None or v.index in wanted
    ]
