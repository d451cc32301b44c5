"""Stages ``caption:<i>``, propose: each captioner writes a caption for every image.

One stage per configured captioner, so each can run in its own worker (and pool of
actors on Ray). The text becomes a proposal ``{"model": <spec>, "text": ...}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from factcap.config import Config
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, fail_all, live, timed
from factcap.roles import slot
from factcap.schema import Proposal
from factcap.text.english import clean_text


def stages(config: Config) -> list[Stage]:
    """One ``caption:<i>`` stage per captioner."""
    return [Stage(f"caption:{i}", slot("captioner", i), run) for i in range(len(config.captioners))]


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Fill in this captioner's proposal for the live items of ``batch``.

    A captioner that raises fails the items of this batch with its reason; other batches go
    on. Without a model (not served) the stage does nothing.
    """
    items = live(batch)
    if model is None or not items:
        return
    captioner, size = model
    with timed(items, f"caption:{captioner.name}"):
        try:
            texts = call_batched(captioner.caption, size, [w.image for w in items])
        except Exception as err:  # a backend failure must not end the job
            fail_all(items, err, f"captioner {captioner.name} failed")
            return
    for w, text in zip(items, texts, strict=True):
        w.record.proposals.append(Proposal(model=captioner.name, text=clean_text(text)))
