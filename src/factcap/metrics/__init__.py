"""Caption metrics: one module per metric, each a pure function plus a :class:`Metric` class.

``METRICS`` is the one table from command-line names to metric classes (``"module:Class"``,
imported lazily, or a class). A package outside factcap adds a metric with
:func:`register_metric`, or declares a function in the ``factcap.metrics`` entry-point group
that calls it (``[project.entry-points."factcap.metrics"] mine = "mypkg:register"``); the
entry points are loaded the first time the table is read through :func:`metric_names` or
:func:`build`.

>>> sorted(METRICS)[:3]
['bleu', 'capture', 'chair']
"""

from __future__ import annotations

import importlib
from typing import Any

from factcap.errors import ConfigError
from factcap.metrics.base import Metric, Sample, Score, summarise
from factcap.plugins import call_group

__all__ = [
    "METRICS",
    "Metric",
    "Sample",
    "Score",
    "build",
    "metric_names",
    "register_metric",
    "summarise",
]

ENTRY_POINT_GROUP = "factcap.metrics"

METRICS: dict[str, str | type[Metric]] = {
    "clip_score": "factcap.metrics.clip_score:ClipScore",
    "ref_clip_score": "factcap.metrics.clip_score:RefClipScore",
    "region_clip_score": "factcap.metrics.region_clip:RegionClipScore",
    "clip_image_score": "factcap.metrics.clip_image:ClipImageScore",
    "vqa_score": "factcap.metrics.vqa_score:VQAScore",
    "vlm_judge": "factcap.metrics.vlm_judge:VLMJudge",
    "capture": "factcap.metrics.capture:Capture",
    "chair": "factcap.metrics.chair:Chair",
    "self_retrieval": "factcap.metrics.retrieval:SelfRetrieval",
    "bleu": "factcap.metrics.coco:Bleu",
    "rouge_l": "factcap.metrics.coco:RougeL",
    "cider": "factcap.metrics.coco:Cider",
    "question_accuracy": "factcap.metrics.question_accuracy:QuestionAccuracy",
}


def register_metric(name: str, target: str | type[Metric]) -> None:
    """Make the metric ``target`` (a :class:`Metric` subclass or ``"module:Class"``)
    available as ``name`` to ``factcap evaluate --metrics`` and the service.

    Example:
        >>> class Length(Metric):
        ...     name, value_names = "length", ("length",)
        ...     def score(self, samples, resources):
        ...         return [Score({"length": float(len(s.caption.split()))}) for s in samples]
        >>> register_metric("length", Length)
        >>> build("length").score([Sample("a", "a.jpg", "final:short", "A grey cat.")], None)
        [Score(values={'length': 3.0}, failure=None, info={})]
    """
    if not name.isidentifier():
        raise ConfigError(f"metric name {name!r} must be a plain word")
    METRICS[name] = target


def _load_plugins() -> None:
    call_group(ENTRY_POINT_GROUP)


def metric_names() -> list[str]:
    """Every metric name, plug-ins included, sorted."""
    _load_plugins()
    return sorted(METRICS)


def build(name: str, **options: Any) -> Metric:
    """The metric called ``name`` on the command line, with its options."""
    _load_plugins()
    if name not in METRICS:
        raise ConfigError(f"unknown metric {name!r}; choose from: {', '.join(metric_names())}")
    target = METRICS[name]
    if isinstance(target, str):
        module_name, class_name = target.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
    else:
        cls = target
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:  # an unknown option or an out-of-range value
        raise ConfigError(f"metric {name}: {err}") from err
