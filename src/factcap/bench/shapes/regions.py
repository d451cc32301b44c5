"""``factcap bench shapes regions``: region captions (``--regions``) against exact truth.

N held-out scenes go through the world's pipeline with regions on. Each region is matched to
the scene object its box overlaps most (IoU at least :data:`MATCH_IOU`); figures:

- ``label_accuracy``: of the scene objects some region matched ("detected objects"), the
  share whose best-matching region's label names the object's colour and shape (a size, if
  the label says one, must be right too);
- ``one_shape_captions``: the share of region captions that name exactly one kind of shape,
  and ``caption_names_label``: the share whose shapes are just the label's;
- ``spurious_regions``: regions that match no object; ``regions_per_scene``.

The world's models were trained on whole 96-pixel scenes, so crops are padded generously by
default (``padding`` 1.0: the object with as much context again on each side), which keeps
them close to what the captioners and the VQA model know.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from factcap.bench.shapes.language import mentions
from factcap.bench.shapes.run import caption_pipeline, pipeline_config, write_scenes
from factcap.bench.shapes.world import Obj, Scene, scenes
from factcap.boxes import iou

#: Least IoU for a region to count as showing a scene object.
MATCH_IOU = 0.5
#: The issue's target for label_accuracy.
TARGET = 0.9


def label_names(label: str, obj: Obj) -> bool:
    """Whether a region label names ``obj`` (its colour and shape; its size when said).

    >>> from factcap.bench.shapes.world import Obj
    >>> obj = Obj("triangle", "green", "large", (0, 0, 28, 28))
    >>> label_names("green triangle", obj), label_names("small green triangle", obj)
    (True, False)
    """
    found = mentions(label)
    if len(found) != 1:
        return False
    m = found[0]
    return m.shape == obj.shape and m.colour == obj.colour and m.size in (None, obj.size)


def region_figures(held_out: Sequence[Scene], records: Sequence[Any]) -> dict[str, Any]:
    """The figures of the module docstring from the scenes and their records."""
    detected = correct = regions = spurious = one_shape = names_label = 0
    for scene, record in zip(held_out, records, strict=True):
        best: dict[int, tuple[float, str]] = {}  # object index -> (IoU, label) of its best region
        for region in record.regions.items:
            regions += 1
            overlaps = [iou(region["box"], obj.box) for obj in scene.objects]
            k = max(range(len(overlaps)), key=overlaps.__getitem__, default=None)
            if k is None or overlaps[k] < MATCH_IOU:
                spurious += 1
            elif overlaps[k] > best.get(k, (0.0, ""))[0]:
                best[k] = (overlaps[k], region["label"])
            shapes = {m.shape for m in mentions(region["caption"])}
            one_shape += len(shapes) == 1
            label_shapes = {m.shape for m in mentions(region["label"])}
            names_label += bool(shapes) and shapes == label_shapes
        detected += len(best)
        correct += sum(label_names(label, scene.objects[k]) for k, (_, label) in best.items())
    objects = sum(len(s.objects) for s in held_out)
    return {
        "scenes": len(held_out),
        "objects": objects,
        "detected_objects": detected,
        "label_accuracy": round(correct / detected, 4) if detected else None,
        "regions": regions,
        "regions_per_scene": round(regions / max(len(held_out), 1), 3),
        "spurious_regions": spurious,
        "one_shape_captions": round(one_shape / regions, 4) if regions else None,
        "caption_names_label": round(names_label / regions, 4) if regions else None,
    }


def run_regions(
    models: str | Path,
    n: int = 100,
    seed: int = 0,
    out: str | Path | None = None,
    padding: float = 1.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Caption ``n`` held-out scenes with ``--regions`` and return the figures (plus
    ``target`` and ``met``); ``out`` keeps the scenes and records."""
    from factcap.pipeline.runner import Pipeline

    models = Path(models).expanduser().resolve()
    folder = Path(out) if out else models / "runs" / f"regions-seed{seed}-n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    held_out = scenes(n, seed=seed, split="test")
    paths = write_scenes(held_out, folder)
    config = {**pipeline_config(models), "regions": {"enabled": True, "padding": padding}}
    start = time.perf_counter()
    records = caption_pipeline(
        Pipeline.from_config(config), paths, folder / "results.jsonl", "regions", log
    )
    figures = region_figures(held_out, records)
    accuracy = figures["label_accuracy"]
    return {
        "benchmark": "shapes_regions",
        "seed": seed,
        "padding": padding,
        **figures,
        "target_label_accuracy": TARGET,
        "met": accuracy is not None and accuracy >= TARGET,
        "errors": sum(r.status != "ok" for r in records),
        "pipeline_s": round(time.perf_counter() - start, 1),
        "records": str(folder / "results.jsonl"),
    }
