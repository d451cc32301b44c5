"""What every metric shares: the sample it scores, the score it returns, the models it uses.

A metric is a pure function (in its own module, documented and tested on its own) plus a
:class:`Metric` class that applies it to a batch of :class:`Sample` rows. The evaluate job
groups samples by caption source, calls :meth:`Metric.score` once per batch, keeps every
per-item :class:`Score`, and aggregates them (:func:`summarise`). A value that could not be
computed is NaN with a reason in :attr:`Score.failure` — never a disguised 0.

>>> summarise([Score({"m": 1.0}), Score({"m": 3.0}), Score.failed(["m"], "no image")])
{'m': {'mean': 2.0, 'std': 1.0, 'n': 2, 'n_failed': 1}}
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from factcap.schema import Media

NAN = float("nan")


@dataclass(slots=True)
class Sample:
    """One caption to score: an image (``source`` path), or an input of several views (a 3D
    asset), and a caption from one source.

    ``caption_source`` is ``final:<style>`` or ``proposal:<model>``. ``references`` are
    human captions when given; ``objects`` a ground-truth object list (CHAIR); ``claims`` the
    pipeline's checked claims for this image (open-vocabulary CHAIR).
    """

    id: str
    source: str
    caption_source: str
    caption: str
    references: list[str] = field(default_factory=list)
    objects: list[str] | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)
    media: Media = field(default_factory=Media)
    """The record's media (:class:`~factcap.schema.Media`). When it lists views (a 3D asset:
    ``source`` is the asset file, its views carry ``file`` when they were saved), the image
    metrics look at every view (:class:`~factcap.metrics.resources.Resources`)."""
    view_size: int | None = None
    """The width of the record's views, for a kind that renders them again."""
    regions: list[dict[str, Any]] = field(default_factory=list)
    """The record's regions (``--regions``: ``id``, ``box`` in pixels, ``label``,
    ``caption``, ...), for the region metrics."""
    question: str | None = None
    """A question about the image (the references', else the record's ``question``)."""
    answers: list[str] = field(default_factory=list)
    """Its reference answers (``answer`` in the references; question-guided accuracy)."""


@dataclass(slots=True)
class Score:
    """A metric's result for one sample: named values, or why there are none."""

    values: dict[str, float]
    failure: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, names: Sequence[str], reason: str) -> Score:
        """NaN for every value name, with the reason."""
        return cls({n: NAN for n in names}, failure=reason)


class Metric(ABC):
    """Applies one metric to batches of samples.

    ``value_names`` are the keys it writes (e.g. ``clip_score`` and ``clip_cosine``);
    ``needs`` says what it uses, so the job builds only the models it must:
    ``image``, ``references``, ``objects``, ``embedder``, ``t2i``, ``vqa``, ``llm``,
    ``answers``.
    """

    name: ClassVar[str]
    value_names: ClassVar[tuple[str, ...]]
    needs: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        """One :class:`Score` per sample, in order; batched inside."""

    def corpus(self, samples: Sequence[Sample], scores: Sequence[Score]) -> dict[str, float]:
        """Corpus-level values for the summary where the metric defines them (BLEU is not
        the mean of sentence BLEUs); empty when the summary is the mean of the items."""
        return {}


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def summarise(scores: Sequence[Score]) -> dict[str, dict[str, float]]:
    """value name → mean, (population) std, n (computed), n_failed (NaN) over ``scores``."""
    names: list[str] = []
    for s in scores:
        names.extend(k for k in s.values if k not in names)
    out: dict[str, dict[str, float]] = {}
    for name in names:
        column = [s.values.get(name, NAN) for s in scores]
        ok = _finite(column)
        mean = sum(ok) / len(ok) if ok else NAN
        std = math.sqrt(sum((v - mean) ** 2 for v in ok) / len(ok)) if ok else NAN
        out[name] = {"mean": mean, "std": std, "n": len(ok), "n_failed": len(column) - len(ok)}
    return out
