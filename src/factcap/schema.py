"""The record that flows through every stage, and the small types inside it.

One :class:`Record` per input image. Stages fill it in place, in order:
decode → propose → verify → compose. Serialised with :meth:`Record.to_dict`, it is one line
of the output JSONL; the field names are a contract (see DESIGN.md, "Result record").

>>> r = Record(id="abc", source="cat.jpg")
>>> r.fail("DecodeError", "not an image")
>>> r.to_dict()["status"], r.to_dict()["error"]["type"]
('error', 'DecodeError')
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ClaimKind = Literal["object", "attribute", "count", "text"]
Verdict = Literal["supported", "refuted", "uncertain"]
CLAIM_KINDS: tuple[str, ...] = ("object", "attribute", "count", "text")
VERDICTS: tuple[str, ...] = ("supported", "refuted", "uncertain")


@dataclass(slots=True)
class Proposal:
    """One candidate caption: which model (or OCR) wrote it, and the text."""

    model: str
    text: str


@dataclass(slots=True)
class Claim:
    """A checkable statement extracted from the proposals.

    ``subject`` is the object phrase the claim is about (what the detector looks for);
    ``question`` is the yes/no question put to the VQA model for attributes and counts.
    ``evidence`` holds what the checkers saw: detector boxes in pixel coordinates of the
    original image (``[x0, y0, x1, y1]``), VQA probabilities and answers, OCR matches.
    """

    kind: str
    text: str
    subject: str = ""
    question: str = ""
    count: int | None = None
    verdict: str = "uncertain"
    score: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ErrorInfo:
    """Why an item failed: a short type name and a human-readable message."""

    type: str
    message: str


@dataclass(slots=True)
class Record:
    """Everything factcap knows about one input. See module docstring for an example."""

    id: str
    source: str
    status: str = "ok"
    proposals: list[Proposal] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, type_: str, message: str) -> None:
        """Mark the record failed; the job goes on with the other items."""
        self.status = "error"
        self.error = ErrorInfo(type=type_, message=message)

    def add_timing(self, stage: str, ms: float) -> None:
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + ms, 3)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: one line of the output JSONL."""
        return {
            "id": self.id,
            "source": self.source,
            "status": self.status,
            "proposals": [asdict(p) for p in self.proposals],
            "claims": [c.to_dict() for c in self.claims],
            "captions": dict(self.captions),
            "removed": list(self.removed),
            "notes": list(self.notes),
            "error": asdict(self.error) if self.error else None,
            "timings_ms": dict(self.timings_ms),
            "models": dict(self.models),
            "image_size": list(self.image_size) if self.image_size else None,
            **({"extra": self.extra} if self.extra else {}),
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
            notes=list(data.get("notes", [])),
            error=ErrorInfo(**err) if err else None,
            timings_ms=dict(data.get("timings_ms", {})),
            models=dict(data.get("models", {})),
            image_size=tuple(size) if size else None,
            extra=dict(data.get("extra", {})),
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
