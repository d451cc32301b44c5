"""Stage ``alt_text``: the input's web alt-text becomes one more proposal.

Web alt-text knows what pixels cannot show (proper names, places, brands, dates) but is often
unrelated to the image or badly formed. So it enters like a captioner's draft, as the proposal
``{"model": "alt_text", "text": ...}``, and its claims are checked like any other: an object
it names that the detector cannot find is refuted. The claims prompt is told what alt-text is
(:func:`factcap.pipeline.claims.alt_text_note`), so names become ``name`` claims that stay
``uncertain`` unless OCR reads them; compose keeps those only as the alt-text's label, or
drops them (``alt_text.unconfirmed_names``).

Where it is read (``alt_text.field``, default ``alt_text``): a key of the item's ``extra`` (a
manifest or Parquet column, a tar member's extension such as ``txt``), else a key of a tar
sample's ``.json`` member. An item without it, or with an empty one, gets no proposal.

>>> from factcap.schema import Record
>>> alt_text_of(Record("a", "a.jpg", extra={"json": {"alt_text": " Eiffel Tower at dusk "}}), "alt_text")
'Eiffel Tower at dusk'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factcap.config import Config
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, live
from factcap.schema import Proposal, Record
from factcap.text.english import clean_text

#: The ``model`` of the alt-text's proposal.
ALT_TEXT = "alt_text"


#: The config section that decides what this stage writes (compared on ``--resume``).
SETTINGS = ("alt_text",)


def stages(config: Config) -> list[Stage]:
    """The ``alt_text`` stage unless alt-text is switched off (``alt_text.field: null``)."""
    return [Stage("alt_text", None, run)] if config.alt_text.field else []


def alt_text_of(record: Record, field: str) -> str | None:
    """The alt-text of ``record`` (see the module docstring), whitespace tidied, or None."""
    value: Any = record.extra.get(field)
    if value is None and isinstance(record.extra.get("json"), dict):
        value = record.extra["json"].get(field)
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    return text or None


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Add the alt-text proposal to the live items that have one."""
    cfg = context.config.alt_text
    if not cfg.field:
        return
    for w in live(batch):
        text = alt_text_of(w.record, cfg.field)
        if text is None:
            continue
        if len(text) > cfg.max_chars:
            text = text[: cfg.max_chars].rsplit(" ", 1)[0]
            w.record.notes.append(f"alt_text: cut to {cfg.max_chars} characters")
        w.record.proposals.append(Proposal(ALT_TEXT, clean_text(text)))
