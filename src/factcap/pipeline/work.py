"""What the stages pass along for one input: its record, its views and OCR spans; and the
one way a work item crosses between processes (:meth:`Work.to_row`, :meth:`Work.from_row`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from factcap.media import MediaKind, View, media_kind
from factcap.schema import Record

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Work:
    """One input in flight. Stages read ``views`` (a photo's one view, an asset's rendered
    views: :class:`~factcap.media.View`) and fill ``record``; ``state`` holds what one stage
    leaves for a later one, as plain JSON data (so it crosses to Ray workers as it is)."""

    record: Record
    views: list[View] = field(default_factory=list)
    ocr_spans: list[Any] | None = None  # None: OCR not run; []: ran, read nothing
    ocr_model: str | None = None  # the OCR backend whose text became a proposal
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_image(cls, record: Record, image: Any) -> Work:
        """A photo's work item (``image`` None: nothing decoded).

        >>> from PIL import Image
        >>> w = Work.of_image(Record("a", "a.png"), Image.new("RGB", (4, 3)))
        >>> w.image.size, len(w.images), w.kind.name
        ((4, 3), 1, 'image')
        """
        return cls(record, [View(image)] if image is not None else [])

    @property
    def kind(self) -> MediaKind:
        """The media kind of the input (its record's ``media.kind``)."""
        return media_kind(self.record.media.kind)

    @property
    def image(self) -> Any:
        """The first view's image (a photo's image), None when nothing was decoded."""
        return self.views[0].image if self.views else None

    @property
    def images(self) -> list[Any]:
        """What the checkers look at: the image of every view."""
        return [v.image for v in self.views]

    def view_image(self, index: int | None) -> Any:
        """The image of the view numbered ``index`` (None: the first view)."""
        for view in self.views:
            if view.index == index:
                return view.image
        return self.image

    def to_row(self) -> dict[str, Any]:
        """This item as plain columns (JSON strings and raw RGB bytes) for another process;
        :meth:`from_row` rebuilds it."""
        views = []
        for v in self.views:
            image = v.image if v.image.mode == "RGB" else v.image.convert("RGB")
            views.append(
                {
                    "pixels": image.tobytes(),
                    "width": image.width,
                    "height": image.height,
                    "index": v.index,
                    "meta": json.dumps(v.meta),
                }
            )
        spans = None if self.ocr_spans is None else [dataclasses.asdict(s) for s in self.ocr_spans]
        return {
            "record": json.dumps(self.record.to_dict()),
            "views": views,
            "ocr": None if spans is None else json.dumps(spans),
            "ocr_model": self.ocr_model,
            "state": json.dumps(self.state),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Work:
        """The inverse of :meth:`to_row`."""
        from PIL import Image

        from factcap.roles import TextSpan

        views = [
            View(
                Image.frombytes("RGB", (v["width"], v["height"]), v["pixels"]),
                v["index"],
                json.loads(v["meta"]),
            )
            for v in row["views"] or []
        ]
        spans = None
        if row["ocr"] is not None:
            spans = [
                TextSpan(text=s["text"], score=s["score"], box=tuple(s["box"]))
                for s in json.loads(row["ocr"])
            ]
        record = Record.from_dict(json.loads(row["record"]))
        return cls(record, views, spans, row["ocr_model"], json.loads(row["state"]))


def live(batch: Sequence[Work]) -> list[Work]:
    """The items of ``batch`` that have not failed yet."""
    return [w for w in batch if w.record.ok]


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


@contextmanager
def failing(items: Sequence[Work], what: str) -> Iterator[None]:
    """An exception in the block fails the live ones of ``items`` with ``what`` and the
    error (:func:`fail_all`) instead of going on: one batch's failure, never the job's.

    >>> w = Work(Record("a", "a.jpg"))
    >>> with failing([w], "VQA model failed"):
    ...     raise TimeoutError("no answer in 60 s")
    >>> w.record.error.type, w.record.error.message
    ('TimeoutError', 'VQA model failed: no answer in 60 s')
    """
    try:
        yield
    except Exception as err:  # a model call that fails must not end the job
        fail_all(items, err, what)


def fail_all(batch: Sequence[Work], err: BaseException, what: str) -> None:
    """Mark every live item failed because ``what`` raised ``err`` for their batch."""
    for w in live(batch):
        w.record.fail(type(err).__name__, f"{what}: {err}"[:2000])
