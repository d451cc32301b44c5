"""Stage ``judge``: every claim gets a verdict, a score and its evidence.

The detector's boxes (from the ``detect`` stage), OCR's reading and the VQA model's answers
decide. With verification switched off (``verify.enabled: false``) the ``unverified`` stage
runs instead: claims stay ``uncertain`` and the record says so.

Verdict rules (``p`` is the VQA model's P(yes); thresholds from :class:`VerifyConfig`):

- **object**: all object subjects of an image go to the detector in one call. A box above the
  detector's threshold → ``supported`` (score = best box score, boxes in evidence). No box →
  ``refuted``, unless the VQA model answers "Is there a <subject> in the image?" with
  ``p >= supported_threshold``, in which case the checkers disagree → ``uncertain``
  (score = p). Without a detector, the VQA question decides alone, as for attributes.
- **attribute** / **count**: the claim's yes/no question to the VQA model: ``p >=
  supported_threshold`` → ``supported``, ``p <= refuted_threshold`` → ``refuted``, otherwise
  ``uncertain``; score = p. An attribute or count of an object refuted above is ``refuted``.
  Count evidence also holds how many boxes the detector found.
- **text**: a claim made from an OCR span is ``supported`` with the OCR confidence as its
  score. Other text claims (from the LLM) are matched against the OCR spans: the quoted text
  occurring as whole words, or a ``difflib`` similarity ``>= text_match_threshold`` →
  ``supported``; otherwise the VQA question decides. With no checker available a claim stays
  ``uncertain`` with score ``None``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

from factcap.config import Config, VerifyConfig
from factcap.pipeline.detect import DETECTIONS
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, fail_all, live, timed
from factcap.schema import Claim, ClaimKind, Verdict

UNVERIFIED_NOTE = "verification switched off: claims were not checked"


def stages(config: Config) -> list[Stage]:
    """``judge`` (with the VQA model when there is one), or ``unverified`` when switched off."""
    if not config.verify.enabled:
        return [Stage("unverified", None, note_unverified)]
    return [Stage("judge", "vqa" if config.vqa else None, run)]


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The stage function: :func:`judge_claims` with the config's thresholds."""
    judge_claims(batch, model, context.config.verify)


def note_unverified(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """Say on every live record that its claims were not checked."""
    for w in live(batch):
        w.record.notes.append(UNVERIFIED_NOTE)


def vqa_question(claim: Claim) -> str:
    """The yes/no question the VQA model is asked about ``claim``."""
    if claim.question:
        return claim.question
    if claim.kind == ClaimKind.OBJECT:
        return f"Is there a {claim.subject} in the image?"
    if claim.kind == ClaimKind.COUNT:
        return f"Are there {claim.count} {claim.subject} in the image?"
    if claim.kind == ClaimKind.TEXT:
        return f"Does the image show the text {json.dumps(claim.subject or claim.text)}?"
    return f"Is it true that {claim.text.rstrip('.')}?"


_QUOTED = re.compile(r"[\"“'‘]([^\"”'’]{1,200})[\"”'’]")


def _text_target(claim: Claim) -> str:
    """The text a ``text`` claim says is written: its quoted part, else its subject."""
    quoted = _QUOTED.search(claim.text)
    return " ".join((quoted.group(1) if quoted else claim.subject or claim.text).lower().split())


def _text_similarity(claim: Claim, spans: Sequence[Any]) -> tuple[float, str]:
    """Best match of the claimed text among the OCR spans: 1.0 for a whole-word occurrence
    (at least 3 characters), otherwise the ``difflib`` similarity ratio."""
    target = _text_target(claim)
    best, best_text = 0.0, ""
    whole = re.compile(rf"(?<!\w){re.escape(target)}(?!\w)") if len(target) >= 3 else None
    for span in spans:
        read = " ".join(span.text.lower().split())
        if whole is not None and whole.search(read):
            ratio = 1.0
        else:
            ratio = difflib.SequenceMatcher(None, target, read).ratio()
        if ratio > best:
            best, best_text = ratio, span.text
    return best, best_text


def judge_claims(
    batch: Sequence[Work], vqa: tuple[Any, int | None] | None, cfg: VerifyConfig
) -> None:
    """Verdicts from the detections (taken off the items), OCR and the VQA model's answers
    (module docstring)."""
    items = [w for w in live(batch) if w.record.claims]
    if not items:
        return
    detected = [w.extra.pop(DETECTIONS, None) for w in items]
    pending: list[tuple[int, Claim]] = []
    for idx, w in enumerate(items):
        for claim in w.record.claims:
            if not _decide_without_vqa(claim, w, detected[idx], cfg):
                pending.append((idx, claim))

    if vqa is not None and pending:
        model, size = vqa
        with timed(items, "vqa"):
            try:
                probs = call_batched(
                    model.yes_probability,
                    size,
                    [items[i].image for i, _ in pending],
                    [vqa_question(c) for _, c in pending],
                )
            except Exception as err:
                fail_all(items, err, f"VQA {model.name} failed")
                return
        for (_, claim), p in zip(pending, probs, strict=True):
            _apply_vqa(claim, float(p), cfg)

    for w in items:
        _propagate_refuted_subjects(w.record.claims)
        w.record.removed = [c.text for c in w.record.claims if c.verdict == Verdict.REFUTED]


def _decide_without_vqa(
    claim: Claim, work: Work, detections: dict[str, list[Any]] | None, cfg: VerifyConfig
) -> bool:
    """Settle what the detector or OCR can settle; True when no VQA question is needed."""
    claim.verdict, claim.score = Verdict.UNCERTAIN, None
    if claim.kind in (ClaimKind.OBJECT, ClaimKind.COUNT) and detections is not None:
        boxes = detections.get(claim.subject, [])
        claim.evidence["detector_boxes"] = [
            {"box": [round(float(v), 1) for v in d.box], "score": round(float(d.score), 4)}
            for d in boxes
        ]
        claim.evidence["detected_count"] = len(boxes)
        if claim.kind == ClaimKind.OBJECT:
            if boxes:
                claim.verdict, claim.score = Verdict.SUPPORTED, max(float(d.score) for d in boxes)
                return True
            claim.verdict, claim.score = Verdict.REFUTED, 0.0
            claim.evidence["detector"] = "no box above the detector's threshold"
    if claim.kind == ClaimKind.TEXT and "ocr_score" in claim.evidence:
        claim.verdict, claim.score = Verdict.SUPPORTED, claim.evidence["ocr_score"]
        claim.evidence["ocr_match"] = claim.subject
        return True  # read by OCR itself: its confidence is the score
    if claim.kind == ClaimKind.TEXT and work.ocr_spans is not None:
        similarity, matched = _text_similarity(claim, work.ocr_spans)
        claim.evidence["ocr_match"] = matched
        claim.evidence["ocr_similarity"] = round(similarity, 4)
        if similarity >= cfg.text_match_threshold:
            claim.verdict, claim.score = Verdict.SUPPORTED, similarity
            return True
    return False


def _apply_vqa(claim: Claim, p: float, cfg: VerifyConfig) -> None:
    claim.evidence["vqa_question"] = vqa_question(claim)
    if p != p:  # NaN: the VQA backend could not answer; the verdict stands as it was
        claim.evidence["vqa_p_yes"] = None
        claim.evidence["vqa_answer"] = "unavailable"
        return
    claim.evidence["vqa_p_yes"] = round(p, 4)
    claim.evidence["vqa_answer"] = "yes" if p >= 0.5 else "no"
    if claim.kind == ClaimKind.OBJECT and claim.verdict == Verdict.REFUTED:
        if p >= cfg.supported_threshold:
            claim.verdict, claim.score = Verdict.UNCERTAIN, p
        return  # the detector found nothing and VQA does not contradict it strongly
    claim.score = p
    if p >= cfg.supported_threshold:
        claim.verdict = Verdict.SUPPORTED
    elif p <= cfg.refuted_threshold:
        claim.verdict = Verdict.REFUTED
    else:
        claim.verdict = Verdict.UNCERTAIN


def _propagate_refuted_subjects(claims: Sequence[Claim]) -> None:
    refuted = {
        c.subject for c in claims if c.kind == ClaimKind.OBJECT and c.verdict == Verdict.REFUTED
    }
    for claim in claims:
        if claim.kind in (ClaimKind.ATTRIBUTE, ClaimKind.COUNT) and claim.subject in refuted:
            claim.verdict = Verdict.REFUTED
            claim.evidence["refuted_because"] = f"no {claim.subject} was found in the image"
