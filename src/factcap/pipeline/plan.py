"""The one ordered list of a config's pipeline stages.

Each stage module has a ``stages(config)`` function that returns its stages for that config
(none when the config switches it off). :data:`STAGE_MODULES` is their order; adding a stage
is a new module with a ``stages`` function, and its line here.

>>> from factcap.config import load_config
>>> [s.name for s in stage_list(load_config(preset="tiny"))]
['caption:0', 'caption:1', 'alt_text', 'ocr', 'claims', 'detect', 'check', 'compose']
>>> [s.name for s in stage_list(load_config(preset="tiny", overrides={"verify": {"enabled": False}}))]
['caption:0', 'caption:1', 'alt_text', 'ocr', 'claims', 'unverified', 'compose']
>>> ranked = {"proposals": {"rank_by": "clip_score", "keep_top": 1}}
>>> [(s.name, s.model) for s in stage_list(load_config(preset="tiny", overrides=ranked))][2:4]
[('alt_text', None), ('rank', 'embedder')]
>>> asked = {"question": {"text": "Is the cat asleep?"}, "ocr": None}
>>> [(s.name, s.model) for s in stage_list(load_config(preset="tiny", overrides=asked))][-3:]
[('compose', 'llm'), ('question:answer', 'llm'), ('question:check', 'vqa')]
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from factcap.config import Config
from factcap.pipeline.stage import Stage
from factcap.schema import Record

#: The stage modules, in pipeline order (each has ``stages(config) -> list[Stage]``).
STAGE_MODULES: tuple[str, ...] = (
    "factcap.pipeline.propose",  # one caption stage per captioner
    "factcap.pipeline.alt_text",  # the input's alt-text as one more proposal
    "factcap.pipeline.rank",  # score the proposals, keep the best (when configured)
    "factcap.pipeline.ocr",  # OCR text as one more proposal
    "factcap.pipeline.claims",  # the LLM turns proposals into claims
    "factcap.pipeline.expert",  # the detector adds what no captioner said (when enabled)
    "factcap.pipeline.detect",  # the detector looks for every object claim
    "factcap.pipeline.check",  # verdicts from boxes, OCR and VQA answers
    "factcap.pipeline.compose",  # the LLM writes each style's caption
    "factcap.pipeline.question",  # --question: the caption's answer, checked on the image
    "factcap.pipeline.regions",  # --regions: region captions, relations, the caption graph
)


def stage_list(config: Config) -> list[Stage]:
    """The stages ``config`` runs, in order."""
    return [stage for name in STAGE_MODULES for stage in import_module(name).stages(config)]


def record_preparers(config: Config) -> list[Callable[[Record, Config], None]]:
    """What stage modules set on a record as soon as its input is read (a module's optional
    ``prepare_record(record, config)``: the question a caption stage will need)."""
    modules = [import_module(name) for name in STAGE_MODULES]
    return [m.prepare_record for m in modules if hasattr(m, "prepare_record")]


def stage_settings() -> tuple[str, ...]:
    """The config sections the stage modules declare (``SETTINGS``) as deciding what a record
    holds: a resume must use the same ones (:func:`factcap.engine.job.job_settings`).

    >>> stage_settings()
    ('alt_text', 'proposals', 'expert', 'question', 'regions')
    """
    return tuple(
        section
        for name in STAGE_MODULES
        for section in getattr(import_module(name), "SETTINGS", ())
    )
