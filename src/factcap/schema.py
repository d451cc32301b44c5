"""The record that flows through every stage, and the small types inside it.

One :class:`Record` per input image. The pipeline's stages fill it in place, in order
(decode, then the stage list of :func:`factcap.pipeline.plan.stage_list`). Serialised with
:meth:`Record.to_dict`, it is one line of the output JSONL; the field names are a contract
(README, "Output").

The values that are a contract (claim kinds, verdicts, record status) are string enums:
they compare equal to their strings and serialise as them, so the JSON stays the same.

>>> r = Record(id="abc", source="cat.jpg")
>>> r.fail("DecodeError", "not an image")
>>> r.to_dict()["status"], r.to_dict()["error"]["type"]
('error', 'DecodeError')
>>> import json
>>> Verdict.REFUTED == "refuted", json.dumps(Verdict.REFUTED)
(True, '"refuted"')
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """``enum.StrEnum`` of Python 3.11: members are their string values."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


class ClaimKind(StrEnum):
    """What a claim is about; decides which checker settles it."""

    OBJECT = "object"
    ATTRIBUTE = "attribute"
    COUNT = "count"
    TEXT = "text"
    NAME = "name"
    """A proper name, place, brand or date (real-world knowledge, typically from alt-text):
    only OCR reading it in the image can confirm it; otherwise it stays ``uncertain``."""


class Verdict(StrEnum):
    """What the checkers concluded about a claim."""

    SUPPORTED = "supported"
    REFUTED = "refuted"
    UNCERTAIN = "uncertain"
    CORRECTED = "corrected"
    """Refuted as stated, with another value of its attribute clearly true instead: the claim
    now states that value (its ``evidence["corrected"]`` says what it said)."""


class Status(StrEnum):
    """Whether a record holds a result or says why there is none."""

    OK = "ok"
    ERROR = "error"


CLAIM_KINDS: tuple[str, ...] = tuple(ClaimKind)
VERDICTS: tuple[str, ...] = tuple(Verdict)


@dataclass(slots=True)
class Proposal:
    """One candidate caption: which model (or OCR, or the input's alt-text: ``alt_text``)
    wrote it, and the text; for a 3D asset, the index of the view it describes. With proposal
    ranking on, ``score`` is its ranking score and ``kept`` whether it went on to the claims."""

    model: str
    text: str
    view: int | None = None
    score: float | None = None
    kept: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (``view`` only for an asset's view; ``score`` and ``kept`` only
        when ranked)."""
        out: dict[str, Any] = {"model": self.model, "text": self.text}
        if self.view is not None:
            out["view"] = self.view
        if self.score is not None or not self.kept:
            out["score"] = self.score
            out["kept"] = self.kept
        return out


@dataclass(slots=True)
class Claim:
    """A checkable statement extracted from the proposals.

    ``subject`` is the object phrase the claim is about (what the detector looks for);
    ``question`` is the yes/no question put to the VQA model for attributes and counts.
    ``evidence`` holds what the checkers saw: detector boxes in pixel coordinates of the
    original image (``[x0, y0, x1, y1]``), VQA probabilities and answers, OCR matches.
    ``origin`` is ``alt_text`` for a claim that only the input's alt-text makes (none of the
    captioners), else None.
    """

    kind: ClaimKind
    text: str
    subject: str = ""
    question: str = ""
    count: int | None = None
    verdict: Verdict = Verdict.UNCERTAIN
    score: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None

    def __post_init__(self) -> None:
        self.kind = ClaimKind(self.kind)
        self.verdict = Verdict(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (kinds and verdicts as plain strings; ``origin`` when set)."""
        out = {**asdict(self), "kind": self.kind.value, "verdict": self.verdict.value}
        if self.origin is None:
            del out["origin"]
        return out


@dataclass(slots=True)
class ErrorInfo:
    """Why an item failed: a short type name and a human-readable message."""

    type: str
    message: str


@dataclass(slots=True)
class Media:
    """What a record's input was: its media ``kind`` (a name in
    :data:`factcap.media.MEDIA`: ``image`` for a photo, ``asset`` for a 3D asset), the
    ``views`` the checkers looked at when the kind has several (``index`` plus the kind's
    metadata: an asset's ``azimuth`` and ``elevation``, and ``file`` when saved), and the
    kind's ``facts`` (an asset's format, faces, vertices, bounds, what was skipped).

    A photo's media says nothing beyond its kind, and its record leaves ``media`` out.

    >>> Media.from_row({"kind": "asset", "views": [{"index": 0}], "asset": {"format": "glb"}})
    Media(kind='asset', views=[{'index': 0}], facts={'format': 'glb'})
    >>> Media.from_row({"media": {"kind": "asset", "views": [], "facts": {}}}).kind
    'asset'
    >>> Media.from_row({}).is_plain_photo
    True
    """

    kind: str = "image"
    views: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def is_plain_photo(self) -> bool:
        """A photo with nothing more to say (its record leaves ``media`` out)."""
        return self.kind == "image" and not self.views and not self.facts

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: the record's ``media`` field."""
        return {"kind": self.kind, "views": list(self.views), "facts": dict(self.facts)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Media:
        """The media of a record row: its ``media`` field, or the ``kind`` / ``views`` /
        ``asset`` fields of records written before ``media`` existed (8d96429 and older).
        Anything that is not of the right type reads as empty."""
        media = row.get("media")
        if isinstance(media, dict):
            kind, views, facts = media.get("kind"), media.get("views"), media.get("facts")
        else:
            kind, views, facts = row.get("kind"), row.get("views"), row.get("asset")
        return cls(
            kind=kind if isinstance(kind, str) and kind else "image",
            views=[v for v in views if isinstance(v, dict)] if isinstance(views, list) else [],
            facts=dict(facts) if isinstance(facts, dict) else {},
        )


@dataclass(slots=True)
class Regions:
    """The results of ``--regions``, the record's ``regions``: ``items``, one per verified
    region (``id``, ``box`` in pixels, ``label``, ``caption``, ``score``, ``claims``,
    ``proposals``), and ``graph``, the caption graph (``nodes``: image, entity, composition,
    relation; ``edges``: ``source``, ``target``, ``text``).

    >>> Regions.from_row({"regions": [{"id": "r0"}], "graph": {"nodes": []}})  # before 2026-12
    Regions(items=[{'id': 'r0'}], graph={'nodes': []})
    >>> Regions.from_row({"regions": {"items": [], "graph": {"nodes": [1]}}}).to_dict()
    {'items': [], 'graph': {'nodes': [1]}}
    """

    items: list[dict[str, Any]] = field(default_factory=list)
    graph: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.graph or self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"items": list(self.items), "graph": dict(self.graph)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Regions:
        """The regions of a record row: its ``regions`` object, or the ``regions`` list and
        ``graph`` of records written before they were grouped. Wrong types read as empty."""
        value = row.get("regions")
        if isinstance(value, dict):
            items, graph = value.get("items"), value.get("graph")
        else:
            items, graph = value, row.get("graph")
        return cls(
            items=[v for v in items if isinstance(v, dict)] if isinstance(items, list) else [],
            graph=dict(graph) if isinstance(graph, dict) else {},
        )


@dataclass(slots=True)
class Question:
    """The item's question (``--question``, or its own ``question`` field) and, once the
    ``question`` caption is written, its ``answer`` check (``llm_answer``, ``answered``,
    ``yes_no``, ``vqa_question``, ``vqa_p_yes``, ``vqa_answer``, ``agrees``;
    :mod:`factcap.pipeline.question`): the record's ``question``.

    >>> Question.from_row({"question": " Why? ", "answer": {"answered": True}})  # before 2026-12
    Question(text='Why?', answer={'answered': True})
    >>> Question.from_row({"question": {"text": "Why?", "answer": {}}}).to_dict()
    {'text': 'Why?', 'answer': {}}
    """

    text: str | None = None
    answer: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "answer": dict(self.answer)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Question:
        """The question of a record row: its ``question`` object, or the ``question`` text
        and ``answer`` of records written before they were grouped. Wrong types read as
        empty; the text is stripped (None when blank)."""
        value = row.get("question")
        if isinstance(value, dict):
            text, answer = value.get("text"), value.get("answer")
        else:
            text, answer = value, row.get("answer")
        return cls(
            text=text.strip() or None if isinstance(text, str) else None,
            answer=dict(answer) if isinstance(answer, dict) else {},
        )


@dataclass(slots=True)
class Record:
    """Everything factcap knows about one input. See module docstring for an example."""

    id: str
    source: str
    status: Status = Status.OK
    proposals: list[Proposal] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    corrected: list[dict[str, str]] = field(default_factory=list)
    """Claims stated with another value than the checks found: ``{"from", "to"}`` texts."""
    notes: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    media: Media = field(default_factory=Media)
    """What the input was (:class:`Media`): its kind, its views, the kind's facts."""
    regions: Regions = field(default_factory=Regions)
    """With ``--regions``: the verified regions and the caption graph (:class:`Regions`)."""
    question: Question = field(default_factory=Question)
    """The item's question and its answer check, when it has one (:class:`Question`)."""

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def fail(self, type_: str, message: str) -> None:
        """Mark the record failed; the job goes on with the other items."""
        self.status = Status.ERROR
        self.error = ErrorInfo(type=type_, message=message)

    def add_timing(self, stage: str, ms: float) -> None:
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + ms, 3)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: one line of the output JSONL."""
        return {
            "id": self.id,
            "source": self.source,
            "status": self.status.value,
            "proposals": [p.to_dict() for p in self.proposals],
            "claims": [c.to_dict() for c in self.claims],
            "captions": dict(self.captions),
            "removed": list(self.removed),
            **({"corrected": list(self.corrected)} if self.corrected else {}),
            "notes": list(self.notes),
            "error": asdict(self.error) if self.error else None,
            "timings_ms": dict(self.timings_ms),
            "models": dict(self.models),
            "image_size": list(self.image_size) if self.image_size else None,
            **({"extra": self.extra} if self.extra else {}),
            **({} if self.media.is_plain_photo else {"media": self.media.to_dict()}),
            **({"regions": self.regions.to_dict()} if self.regions else {}),
            **({"question": self.question.to_dict()} if self.question else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Rebuild a record from :meth:`to_dict` output (e.g. a line of results JSONL)."""
        err = data.get("error")
        size = data.get("image_size")
        return cls(
            id=data["id"],
            source=data.get("source", ""),
            status=data.get("status", "ok"),
            proposals=[Proposal(**p) for p in data.get("proposals", [])],
            claims=[Claim(**c) for c in data.get("claims", [])],
            captions=dict(data.get("captions", {})),
            removed=list(data.get("removed", [])),
            corrected=list(data.get("corrected") or []),
            notes=list(data.get("notes", [])),
            error=ErrorInfo(**err) if err else None,
            timings_ms=dict(data.get("timings_ms", {})),
            models=dict(data.get("models", {})),
            image_size=tuple(size) if size else None,
            extra=dict(data.get("extra", {})),
            media=Media.from_row(data),
            regions=Regions.from_row(data),
            question=Question.from_row(data),
        )


def stable_id(source: str, content: bytes | None = None) -> str:
    """A stable 16-hex-digit id: from the path as given for files, from the bytes otherwise.

    The same file named the same way always gets the same id, so results can be joined
    and resumed; in-memory images (no path) are identified by their pixels.

    >>> stable_id("photos/cat.jpg") == stable_id("photos/cat.jpg")
    True
    >>> stable_id("<memory>", b"xyz") == stable_id("<other>", b"xyz")
    True
    """
    h = hashlib.sha256()
    h.update(content if content is not None else source.encode("utf-8"))
    return h.hexdigest()[:16]


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in nested dicts and lists) made ``None``,
    so that it dumps as strict JSON.

    >>> json_safe({"a": float("nan"), "b": [1.5, float("inf")], "c": "x"})
    {'a': None, 'b': [1.5, None], 'c': 'x'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
