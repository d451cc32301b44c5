"""Caption quality against the generator's ground truth: exact, no model involved.

Every object phrase of a caption (:func:`~factcap.bench.shapes.language.mentions`) is checked
against the scene:

- **hallucinated**: the phrase's shape is not in the scene at all;
- **wrong attribute**: the shape is there, but no object of it has the stated colour and size;
- **recall**: a (colour, shape) pair of the scene is recalled when a phrase names that shape
  with that colour;
- **count accuracy**: a phrase with a number ("a", "two", ...) whose shape, colour and size are
  in the scene is right when the scene has exactly that many such objects.

Rates are micro-averages over all captions (``hallucinated phrases / phrases``), the way
CHAIR-i is computed; a rate with nothing to count is NaN.

>>> from factcap.bench.shapes.world import Obj, Scene
>>> scene = Scene("s", (Obj("circle", "red", "small", (0, 0, 16, 16)),), 230)
>>> counts = caption_counts(scene, "There is a small red circle. There is a blue cross.")
>>> counts["mentions"], counts["hallucinated"], counts["recalled"]
(2, 1, 1)
>>> score_captions([scene], ["There are two large red circles."])["attribute_error_rate"]
1.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from factcap.bench.shapes.language import mentions
from factcap.bench.shapes.world import Scene

RATES = {
    "hallucination_rate": ("hallucinated", "mentions"),
    "attribute_error_rate": ("wrong_attribute", "present_with_attribute"),
    "recall": ("recalled", "truth_pairs"),
    "count_accuracy": ("count_correct", "counted"),
}


def caption_counts(scene: Scene, text: str) -> Counter[str]:
    """The numerators and denominators of every rate, for one caption of ``scene``."""
    counts: Counter[str] = Counter()
    found = mentions(text)
    counts["captions"] += 1
    counts["mentions"] += len(found)
    named: set[tuple[str, str]] = set()
    for m in found:
        if scene.count(m.shape) == 0:
            counts["hallucinated"] += 1
            continue
        if m.colour:
            named.add((m.colour, m.shape))
        if m.colour or m.size:
            counts["present_with_attribute"] += 1
            if scene.count(m.shape, m.colour, m.size) == 0:
                counts["wrong_attribute"] += 1
                continue
        if m.count is not None:
            counts["counted"] += 1
            counts["count_correct"] += m.count == scene.count(m.shape, m.colour, m.size)
    truth = {(o.colour, o.shape) for o in scene.objects}
    counts["truth_pairs"] += len(truth)
    counts["recalled"] += len(truth & named)
    return counts


def rates(counts: Counter[str]) -> dict[str, float]:
    """The four rates from summed counts (NaN where the denominator is 0)."""
    return {
        name: counts[num] / counts[den] if counts[den] else float("nan")
        for name, (num, den) in RATES.items()
    }


def score_captions(scenes: Sequence[Scene], captions: Sequence[str]) -> dict[str, float]:
    """The four rates over ``captions`` (one per scene, in order), plus the phrase count per
    caption (``mentions_per_caption``)."""
    if len(scenes) != len(captions):
        raise ValueError(f"{len(scenes)} scenes but {len(captions)} captions")
    total: Counter[str] = Counter()
    for scene, text in zip(scenes, captions, strict=True):
        total += caption_counts(scene, text)
    out = rates(total)
    out["mentions_per_caption"] = total["mentions"] / max(1, total["captions"])
    return out
