"""Stage 1, propose: every captioner writes a caption for every image; OCR adds what it reads.

OCR text becomes one more proposal (``model: "<ocr spec>"``), so the LLM sees it, and is kept
on the work item for checking ``text`` claims later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factcap.pipeline.work import Work, call_batched, fail_all, live, timed
from factcap.schema import Proposal
from factcap.text.english import clean_text


def propose(
    batch: Sequence[Work],
    captioners: Sequence[tuple[Any, int | None]],
    ocr: tuple[Any, int | None] | None = None,
) -> None:
    """Fill ``record.proposals`` for the live items of ``batch``.

    ``captioners`` and ``ocr`` are (backend, batch size) pairs. A backend that raises fails
    the items of this batch with its reason; other batches go on.
    """
    for captioner, size in captioners:
        items = live(batch)
        if not items:
            return
        with timed(items, f"caption:{captioner.name}"):
            try:
                texts = call_batched(captioner.caption, size, [w.image for w in items])
            except Exception as err:  # a backend failure must not end the job
                fail_all(items, err, f"captioner {captioner.name} failed")
                continue
        for w, text in zip(items, texts, strict=True):
            w.record.proposals.append(Proposal(model=captioner.name, text=clean_text(text)))
    if ocr is not None:
        read_text(live(batch), *ocr)


def read_text(items: Sequence[Work], ocr: Any, size: int | None) -> None:
    """Run OCR; what it reads becomes a proposal and stays on the item for text claims."""
    if not items:
        return
    with timed(items, f"ocr:{ocr.name}"):
        try:
            spans_per_image = call_batched(ocr.read, size, [w.image for w in items])
        except Exception as err:
            fail_all(items, err, f"OCR {ocr.name} failed")
            return
    for w, spans in zip(items, spans_per_image, strict=True):
        w.ocr_spans = [s for s in spans if s.text.strip()]
        if w.ocr_spans:
            w.ocr_model = ocr.name
            quoted = ", ".join(f'"{s.text.strip()}"' for s in w.ocr_spans)
            w.record.proposals.append(
                Proposal(model=ocr.name, text=f"Text visible in the image: {quoted}.")
            )
