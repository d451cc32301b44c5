"""Stage ``detect``: every object claim of an image goes to the open-vocabulary detector.

All object (and count) subjects of an image are asked in one detector call; the boxes found
per query travel on the work item (``state["detections"]``) to the ``check`` stage, which
turns them into verdicts. Without a detector in the config there is no such stage and the
verdicts are left to the VQA model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factcap.config import Config
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, live
from factcap.schema import ClaimKind

DETECTIONS = "detections"
"""Key of ``Work.state`` holding an item's detections, from this stage to ``check``: one
``{query: [{"score", "box"}]}`` per view the checkers look at (plain data)."""


def stages(config: Config) -> list[Stage]:
    """The ``detect`` stage, when verification is on and a detector is configured."""
    stage = Stage("detect", "detector", run, fails_as="detector {model} failed")
    return [stage] if config.verify.enabled and config.detector else []


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The stage function: :func:`detect_claims`."""
    detect_claims(batch, model)


def object_queries(work: Work) -> list[str]:
    """The distinct subjects of an item's object and count claims: its detector queries."""
    return list(
        dict.fromkeys(
            c.subject
            for c in work.record.claims
            if c.kind in (ClaimKind.OBJECT, ClaimKind.COUNT) and c.subject
        )
    )


def detect_claims(batch: Sequence[Work], detector: tuple[Any, int | None] | None) -> None:
    """All object subjects of each live item with claims go to the detector in one call per
    image (a 3D asset: per view, batched); ``extra["detections"]`` gets a list with one
    {query: [{"score", "box"}]} per image (plain data, as ``Work.state`` holds). An item without object or count claims is not sent (its
    list holds one empty mapping per image, as the detector would answer). Without a
    detector nothing happens (and the verdicts are left to VQA)."""
    items = [w for w in live(batch) if w.record.claims]
    if not items or detector is None:
        return
    model, size = detector
    queries = [object_queries(w) for w in items]
    for w in items:
        # an item with no object claims never reaches the detector: it found nothing
        w.state[DETECTIONS] = [{} for _ in w.images]
    asking = [w for w, q in zip(items, queries, strict=True) if q]
    pairs = [(w, image, q) for w, q in zip(items, queries, strict=True) if q for image in w.images]
    if not pairs:
        return
    found = call_batched(
        model.detect, size, [image for _, image, _ in pairs], [q for _, _, q in pairs]
    )
    for w in asking:
        w.state[DETECTIONS] = []
    for (w, _, _), detections in zip(pairs, found, strict=False):  # as many as it gave
        per_query: dict[str, list[dict[str, Any]]] = {}
        for det in detections:
            per_query.setdefault(det.query, []).append(
                {"score": float(det.score), "box": [float(v) for v in det.box]}
            )
        w.state[DETECTIONS].append(per_query)
