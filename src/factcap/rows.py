"""Typed read-only views of record rows: what evaluate, report, filter, export and study read.

A *row* is a record as read back (:func:`factcap.engine.records.read_records`), or a line of
JSONL written by another tool with only some of the fields. :class:`RecordRow` reads each
field with its type; a field that is missing or of the wrong type reads as its empty value
(``None``, ``""``, ``[]``, ``{}``), never raises, so one malformed row cannot stop a reader.
The media part is :meth:`factcap.schema.Media.from_row` (records of any age).

>>> row = RecordRow({"id": "a", "source": "a.jpg", "captions": {"short": "A cat.", "n": 5},
...                  "image_size": [640, 480], "claims": [{"kind": "object", "verdict":
...                  "refuted", "text": "There is a dog."}, "junk"], "notes": None})
>>> row.id, row.status, row.ok, row.captions, row.image_size, row.notes
('a', 'ok', True, {'short': 'A cat.'}, (640, 480), [])
>>> [(c.kind, c.verdict, c.claim.subject == "") for c in row.claims]
[('object', 'refuted', True)]
>>> RecordRow({"source": "b.jpg", "error": {"type": "DecodeError"}}).error
ErrorInfo(type='DecodeError', message='')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from factcap.schema import CLAIM_KINDS, VERDICTS, Claim, ErrorInfo, Media, Question, Regions


class _View:
    """A read-only view of one JSON object (``raw``: the object; anything else reads empty)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.raw)!r})"

    def _text(self, key: str) -> str | None:
        """The value as text (``str()`` of a number too); None when missing or null."""
        value = self.raw.get(key)
        return None if value is None else str(value)


class ProposalRow(_View):
    """One entry of a record's ``proposals``."""

    __slots__ = ()

    @property
    def model(self) -> str | None:
        """Which model (or ``ocr`` model, or ``alt_text``) wrote it."""
        return self._text("model")

    @property
    def text(self) -> str:
        return self._text("text") or ""

    @property
    def view(self) -> int | None:
        """The index of the view it describes (an input of several views), else None."""
        return _int(self.raw.get("view"))

    @property
    def score(self) -> float | None:
        """Its ranking score (a finite number), else None."""
        return finite(self.raw.get("score"))

    @property
    def kept(self) -> bool:
        """False only where ranking left it out (``"kept": false``)."""
        return self.raw.get("kept") is not False


class ClaimRow(_View):
    """One entry of a record's ``claims``.

    >>> c = ClaimRow({"kind": "count", "text": "There are 2 cats.", "count": 2,
    ...               "verdict": "maybe", "evidence": "none"})
    >>> c.verdict, c.evidence, c.claim.count, c.claim.verdict
    (None, {}, 2, <Verdict.UNCERTAIN: 'uncertain'>)
    >>> ClaimRow({"kind": "smell", "text": "It smells."}).claim is None
    True
    """

    __slots__ = ()

    @property
    def kind(self) -> str:
        """The claim kind as written (rows of other tools may hold kinds factcap lacks)."""
        return self._text("kind") or ""

    @property
    def text(self) -> str:
        return self._text("text") or ""

    @property
    def subject(self) -> str:
        value = self.raw.get("subject")
        return str(value) if value else ""

    @property
    def verdict(self) -> str | None:
        """``supported``, ``refuted`` or ``uncertain``; None for anything else."""
        value = self.raw.get("verdict")
        return value if isinstance(value, str) and value in VERDICTS else None

    @property
    def score(self) -> float | None:
        return finite(self.raw.get("score"))

    @property
    def count(self) -> int | None:
        return _int(self.raw.get("count"))

    @property
    def evidence(self) -> dict[str, Any]:
        """What the checkers saw (free-form: detector boxes, VQA answers, OCR matches)."""
        return _dict(self.raw.get("evidence"))

    @property
    def origin(self) -> str | None:
        """``alt_text`` for a claim only the input's alt-text makes, else None."""
        value = self.raw.get("origin")
        return str(value) if value else None

    @property
    def claim(self) -> Claim | None:
        """The claim as a :class:`~factcap.schema.Claim` (kind, text, subject, count and
        verdict; an unknown verdict is ``uncertain``), None when its kind is not a claim kind."""
        if self.kind not in CLAIM_KINDS:
            return None
        return Claim(
            kind=self.kind,
            text=self.text,
            subject=self.subject,
            count=self.count,
            verdict=self.verdict or "uncertain",
        )


class RecordRow(_View):
    """One record row (see the module docstring), read field by field."""

    __slots__ = ()

    @classmethod
    def of(cls, row: RecordRow | Mapping[str, Any]) -> RecordRow:
        """``row`` itself when it is a view already, else a view of it."""
        return row if isinstance(row, RecordRow) else cls(row)

    @property
    def id(self) -> str | None:
        """The record's id as text; None when the row has none (or a null one)."""
        return self._text("id")

    @property
    def source(self) -> str | None:
        """The input's path (or container reference) as written; None when missing."""
        return self._text("source")

    @property
    def error(self) -> ErrorInfo | None:
        """Why the item failed, when the row's ``error`` is an object (``type`` ``Error`` and
        an empty message where it does not say)."""
        error = self.raw.get("error")
        if not isinstance(error, Mapping):
            return None
        kind, message = error.get("type"), error.get("message")
        return ErrorInfo(
            type="Error" if kind is None else str(kind),
            message="" if message is None else str(message),
        )

    @property
    def status(self) -> str:
        """The row's ``status``; where it gives none, ``error`` when it has an error object and
        ``ok`` otherwise (rows of other tools: id, source and captions)."""
        value = self.raw.get("status")
        if value:
            return str(value)
        return "error" if self.error is not None else "ok"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def captions(self) -> dict[str, str]:
        """Style → caption; entries whose caption is not text are left out."""
        captions = self.raw.get("captions")
        if not isinstance(captions, Mapping):
            return {}
        return {str(k): v for k, v in captions.items() if isinstance(v, str)}

    @property
    def proposals(self) -> list[ProposalRow]:
        return [ProposalRow(p) for p in _dicts(self.raw.get("proposals"))]

    @property
    def claims(self) -> list[ClaimRow]:
        return [ClaimRow(c) for c in _dicts(self.raw.get("claims"))]

    @property
    def removed(self) -> list[str]:
        """The refuted statements left out of the captions."""
        return _texts(self.raw.get("removed"))

    @property
    def notes(self) -> list[str]:
        return _texts(self.raw.get("notes"))

    @property
    def models(self) -> dict[str, Any]:
        """Model slot → spec (``captioners``, ``llm``, ``ocr`` ...)."""
        return _dict(self.raw.get("models"))

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(width, height)`` in pixels: two positive finite numbers, else None.

        >>> RecordRow({"image_size": [640.0, 480]}).image_size, RecordRow({"image_size": [0, 5]}).image_size
        ((640, 480), None)
        """
        size = self.raw.get("image_size")
        if isinstance(size, (list, tuple)) and len(size) == 2:
            w, h = (finite(v) for v in size)
            if w and h and w > 0 and h > 0:
                return int(w), int(h)
        return None

    @property
    def media(self) -> Media:
        """What the input was (:meth:`~factcap.schema.Media.from_row`: records of any age)."""
        return Media.from_row(self.raw)

    @property
    def regions(self) -> list[dict[str, Any]]:
        """With ``--regions``: the verified regions (free-form objects: ``id``, ``box``,
        ``box_normalised``, ``label``, ``caption``, ``score`` ...); records of any age."""
        return Regions.from_row(self.raw).items

    @property
    def graph(self) -> dict[str, Any]:
        """With ``--regions``: the caption graph (``nodes``, ``edges``), else ``{}``."""
        return Regions.from_row(self.raw).graph

    @property
    def question(self) -> str | None:
        """The item's question, stripped; None when it has none."""
        return Question.from_row(self.raw).text

    @property
    def answer(self) -> dict[str, Any]:
        """With a question: the answer check (:mod:`factcap.pipeline.question`), else ``{}``."""
        return Question.from_row(self.raw).answer

    @property
    def extra(self) -> dict[str, Any]:
        """The input's own fields (a manifest's ``objects`` ...), else ``{}``."""
        return _dict(self.raw.get("extra"))


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None.

    >>> finite(2), finite(float("nan")), finite(True), finite("1")
    (2.0, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list (other entries left out); ``[]`` for anything but a list."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _texts(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
