"""What the stages pass along for one image: its record, its pixels and OCR spans."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from factcap.schema import Record

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Work:
    """One input in flight. Stages read ``image`` (a photo) or ``views`` (the rendered views
    of a 3D asset; ``image`` is then its first view) and fill ``record``."""

    record: Record
    image: Any  # PIL.Image.Image, RGB, original size
    ocr_spans: list[Any] | None = None  # None: OCR not run; []: ran, read nothing
    ocr_model: str | None = None  # the OCR backend whose text became a proposal
    extra: dict[str, Any] = field(default_factory=dict)
    views: list[Any] | None = None  # an asset's views (PIL images), None for a photo

    @property
    def images(self) -> list[Any]:
        """What the checkers look at: the photo, or every view of an asset."""
        return list(self.views) if self.views is not None else [self.image]


def live(batch: Sequence[Work]) -> list[Work]:
    """The items of ``batch`` that have not failed yet."""
    return [w for w in batch if w.record.ok]


@contextmanager
def timed(batch: Sequence[Work], stage: str) -> Iterator[None]:
    """Add the wall time of the block to each item's ``timings_ms[stage]``, split evenly."""
    start = time.perf_counter()
    try:
        yield
    finally:
        share = (time.perf_counter() - start) * 1000.0 / max(len(batch), 1)
        for w in batch:
            w.record.add_timing(stage, share)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items from a stream (the last one may be shorter).

    >>> list(batched(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def chunked(items: Sequence[T], size: int | None) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (all at once when size is None)."""
    step = size or max(len(items), 1)
    for i in range(0, len(items), step):
        yield items[i : i + step]


def call_batched(fn: Callable[..., list[R]], size: int | None, *columns: Sequence[Any]) -> list[R]:
    """``fn(*columns)`` in chunks of ``size`` rows; results concatenated in order."""
    out: list[R] = []
    n = len(columns[0]) if columns else 0
    step = size or max(n, 1)
    for i in range(0, n, step):
        out.extend(fn(*(c[i : i + step] for c in columns)))
    return out


def fail_all(batch: Sequence[Work], err: BaseException, what: str) -> None:
    """Mark every live item failed because ``what`` raised ``err`` for their batch."""
    for w in live(batch):
        w.record.fail(type(err).__name__, f"{what}: {err}"[:2000])
