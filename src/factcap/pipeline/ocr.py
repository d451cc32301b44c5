"""Stage ``ocr``: the OCR expert reads the text in the image.

What it reads becomes one more proposal (``model: "<ocr spec>"``, ``"Text visible in the
image: ..."``), so the LLM sees it, and stays on the work item (``ocr_spans``) for checking
``text`` claims later (:mod:`factcap.pipeline.check`). A 3D asset's views are all read; the
same text on several views counts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factcap.config import Config
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, live
from factcap.schema import Proposal


def stages(config: Config) -> list[Stage]:
    """The ``ocr`` stage when the config has an OCR model."""
    stage = Stage("ocr", "ocr", run, fails_as="OCR {model} failed", timing="ocr:{model}")
    return [stage] if config.ocr is not None else []


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Read the text of the live items; without a model nothing happens."""
    items = live(batch)
    if model is None or not items:
        return
    ocr, size = model
    owners = [(w, image) for w in items for image in w.images]  # an asset: every view
    spans_per_image = call_batched(ocr.read, size, [image for _, image in owners])
    read: dict[int, list[Any]] = {}
    for (w, _), spans in zip(owners, spans_per_image, strict=True):
        seen = read.setdefault(id(w), [])
        texts = {s.text.strip() for s in seen}
        seen.extend(s for s in spans if s.text.strip() and s.text.strip() not in texts)
    for w in items:
        w.ocr_spans = read[id(w)]
        if w.ocr_spans:
            w.ocr_model = ocr.name
            quoted = ", ".join(f'"{s.text.strip()}"' for s in w.ocr_spans)
            w.record.proposals.append(
                Proposal(model=ocr.name, text=f"Text visible in the image: {quoted}.")
            )
