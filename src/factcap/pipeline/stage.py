"""What a pipeline stage is, and the models the stages run.

A :class:`Stage` is data: a name, the model slot it needs (or none), and a function that
runs it on one batch of :class:`~factcap.pipeline.work.Work` items. The ordered list of a
config's stages comes from :func:`factcap.pipeline.plan.stage_list`; executors (the local
one, Ray, the service's batcher) only loop over that list and call :func:`run_stage`, which
times each stage and turns what it raises into its batch's error records, so no stage
writes that and no executor names a stage. The models by slot are
:class:`factcap.pipeline.models.Models`.

>>> from factcap.config import load_config
>>> from factcap.pipeline.plan import stage_list
>>> [(s.name, s.model) for s in stage_list(load_config(preset="tiny"))][:4]
[('caption:0', 'captioner:0'), ('caption:1', 'captioner:1'), ('alt_text', None), ('ocr', 'ocr')]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from factcap.backends.registry import BoundModel
from factcap.config import Config
from factcap.pipeline.work import Work, failing, live


@dataclass(frozen=True, slots=True)
class StageContext:
    """What a stage may read besides its batch and model: the config and this call's
    caption styles and instruction."""

    config: Config
    styles: tuple[str, ...]
    instruction: str | None

    @classmethod
    def of(
        cls, config: Config, styles: Sequence[str] | None = None, instruction: str | None = None
    ) -> StageContext:
        """The context for a call; ``None`` takes the config's styles / instruction."""
        return cls(config, tuple(styles or config.styles), instruction or config.instruction)


StageFn = Callable[[Sequence[Work], BoundModel | None, StageContext], None]


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of the pipeline.

    ``model`` is the slot (``captioner:0``, ``llm``, ``detector`` ...) of the model the stage
    runs, or None for a stage that needs no model; ``run(batch, model, context)`` fills the
    records of the batch's live items in place. What it raises fails the batch's live items
    with ``fails_as`` (:func:`run_stage`); the time it takes goes to their
    ``timings_ms[timing]`` (default: the stage's name). Both may name the model as
    ``{model}``.

    >>> Stage("ocr", "ocr", print, fails_as="OCR {model} failed").failure("rapidocr")
    'OCR rapidocr failed'
    """

    name: str
    model: str | None
    run: StageFn
    fails_as: str = "stage {name} failed"
    timing: str | None = None

    def failure(self, model: str | None) -> str:
        """What the error records of a batch it failed say went wrong."""
        return self.fails_as.format(name=self.name, model=model)

    def timing_name(self, model: str | None) -> str:
        """The key of ``timings_ms`` its time goes to (its name when it ran without a model,
        never ``ocr:None``).

        >>> Stage("ocr", "ocr", print, timing="ocr:{model}").timing_name(None)
        'ocr'
        """
        if model is None or self.timing is None:
            return self.name
        return self.timing.format(name=self.name, model=model)


def run_stage(
    stage: Stage, batch: Sequence[Work], model: BoundModel | None, context: StageContext
) -> None:
    """Run ``stage`` on the live items of ``batch``: its wall time is shared among them, and
    an exception fails them (:meth:`Stage.failure`) while the job goes on with other batches.

    >>> from factcap.config import load_config
    >>> from factcap.schema import Record
    >>> def boom(batch, model, context):
    ...     raise RuntimeError("out of memory")
    >>> work = [Work(Record("a", "a.jpg"))]
    >>> run_stage(Stage("claims", None, boom, "LLM failed"), work, None, None)
    >>> work[0].record.error.message, "claims" in work[0].record.timings_ms
    ('LLM failed: out of memory', True)
    """
    items = live(batch)
    if not items:
        return
    name = getattr(model.backend, "name", None) if model is not None else None
    start = time.perf_counter()
    try:
        with failing(items, stage.failure(name)):
            stage.run(batch, model, context)
    finally:
        share = (time.perf_counter() - start) * 1000.0 / len(items)
        for w in items:
            w.record.add_timing(stage.timing_name(name), share)
