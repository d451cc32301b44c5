"""Records with regions and a caption graph, made by the pipeline's own functions
(:func:`factcap.pipeline.regions.region_entry` and :func:`~factcap.pipeline.regions.build_graph`)
without running models: for the tests of what reads them (export, metrics, report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from factcap.pipeline.regions import Region, Relation, build_graph, region_entry
from factcap.pipeline.work import Work
from factcap.schema import Record, Verdict


def region_record(
    rid: str,
    source: str,
    size: tuple[int, int],
    captions: dict[str, str],
    regions: Sequence[tuple[str, Sequence[float], float, str]],
    relations: Sequence[tuple[int, int, str, str]] = (),
) -> dict[str, Any]:
    """A record (as a results line) of image ``source`` of ``size`` with ``regions``
    (label, pixel box, detector score, region caption) and ``relations`` (index of a,
    index of b, relation, verdict), as ``factcap caption --regions`` writes it."""
    record = Record(rid, source, captions=dict(captions), image_size=size)
    made = []
    for k, (label, box, score, caption) in enumerate(regions):
        crop = Work.of_image(Record(f"{rid}#r{k}", source), Image.new("RGB", (2, 2)))
        if caption:
            crop.record.captions["region"] = caption
        pixels = tuple(float(v) for v in box)
        crop_box = tuple(int(v) for v in box)
        made.append(Region(f"r{k}", label, pixels, score, crop_box, crop))
    rels = [
        Relation(made[a], made[b], rel, [], verdict=Verdict(verdict), score=0.8)
        for a, b, rel, verdict in relations
    ]
    record.regions.items = [region_entry(r, size) for r in made]
    record.regions.graph = build_graph(record, made, rels, size)
    return record.to_dict()
