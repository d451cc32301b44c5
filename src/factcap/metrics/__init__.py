"""Caption metrics: one module per metric, each a pure function plus a :class:`Metric` class.

``METRICS`` is the one table from command-line names to metric classes (imported lazily).

>>> sorted(METRICS)[:3]
['bleu', 'capture', 'chair']
"""

from __future__ import annotations

import importlib
from typing import Any

from factcap.errors import ConfigError
from factcap.metrics.base import Metric, Sample, Score, summarise

__all__ = ["METRICS", "Metric", "Sample", "Score", "build", "summarise"]

METRICS: dict[str, str] = {
    "clip_score": "clip_score:ClipScore",
    "ref_clip_score": "clip_score:RefClipScore",
    "clip_image_score": "clip_image:ClipImageScore",
    "vqa_score": "vqa_score:VQAScore",
    "capture": "capture:Capture",
    "chair": "chair:Chair",
    "self_retrieval": "retrieval:SelfRetrieval",
    "bleu": "coco:Bleu",
    "rouge_l": "coco:RougeL",
    "cider": "coco:Cider",
}


def build(name: str, **options: Any) -> Metric:
    """The metric called ``name`` on the command line, with its options."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; choose from: {', '.join(sorted(METRICS))}")
    module_name, class_name = METRICS[name].split(":")
    cls = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    try:
        return cls(**options)
    except TypeError as err:
        raise ConfigError(f"metric {name}: {err}") from err
