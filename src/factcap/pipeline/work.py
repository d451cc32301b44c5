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


def call_by_image(
    fn: Callable[[list[Any], list[Any]], Sequence[R]],
    size: int | None,
    images: Sequence[Any],
    rows: Sequence[Any],
) -> list[R]:
    """``fn(images, rows)`` in calls that each take every row about at most ``size`` distinct
    images (the same object), so a backend that encodes each image of a call once encodes it
    once in all; results in the order of the rows.

    >>> calls = []
    >>> def fn(images, rows):
    ...     calls.append(rows)
    ...     return [r.upper() for r in rows]
    >>> a, b, c = object(), object(), object()
    >>> call_by_image(fn, 2, [a, b, a, c, b], ["a1", "b1", "a2", "c1", "b2"]), calls
    (['A1', 'B1', 'A2', 'C1', 'B2'], [['a1', 'a2', 'b1', 'b2'], ['c1']])
    """
    groups: dict[int, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(id(image), []).append(i)
    out: list[Any] = [None] * len(rows)
    for chunk in chunked(list(groups.values()), size):
        at = [i for group in chunk for i in group]
        answers = fn([images[i] for i in at], [rows[i] for i in at])
        for i, answer in zip(at, answers, strict=True):
            out[i] = answer
    return out


def fail_all(batch: Sequence[Work], err: BaseException, what: str) -> None:
    """Mark every live item failed because ``what`` raised ``err`` for their batch."""
    for w in live(batch):
        w.record.fail(type(err).__name__, f"{what}: {err}"[:2000])
