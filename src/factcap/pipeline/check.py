"""Stage ``check``: every claim gets a verdict, a score and its evidence.

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
- **name** (a proper name, place, brand or date, typically from alt-text): pixels cannot tell
  who or where, so only OCR can confirm one: the name read in the image (as for text claims)
  → ``supported``; otherwise ``uncertain`` with score ``None`` and the reason in evidence. The
  VQA model is never asked (it would guess). Compose keeps an unconfirmed name only as the
  alt-text's label, or drops it (``alt_text.unconfirmed_names``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

from factcap.config import Config, VerifyConfig
from factcap.media import MediaKind
from factcap.pipeline.detect import DETECTIONS
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, call_batched, call_by_image, live
from factcap.roles import batches_by_image
from factcap.schema import Claim, ClaimKind, Verdict
from factcap.text.attributes import alternatives, stated_value, with_value

#: The ``origin`` of a claim the detection expert adds (:mod:`factcap.pipeline.expert`).
EXPERT = "expert"

UNVERIFIED_NOTE = "verification switched off: claims were not checked"


def stages(config: Config) -> list[Stage]:
    """``check`` (with the VQA model when there is one), or ``unverified`` when switched off."""
    if not config.verify.enabled:
        return [Stage("unverified", None, note_unverified)]
    return [Stage("check", "vqa" if config.vqa else None, run, fails_as="VQA {model} failed")]


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The stage function: :func:`check_claims` with the config's thresholds."""
    check_claims(batch, model, context.config.verify)


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


def check_claims(
    batch: Sequence[Work], vqa: tuple[Any, int | None] | None, cfg: VerifyConfig
) -> None:
    """Verdicts from the detections (taken off the items), OCR and the VQA model's answers
    (module docstring); all questions of the batch go to the VQA model together, each
    distinct (image, question) pair once (:func:`ask_once`)."""
    items = [w for w in live(batch) if w.record.claims]
    if not items:
        return
    detected = [w.state.pop(DETECTIONS, None) for w in items]
    pending: list[tuple[int, Claim, list[int]]] = []  # item, claim, images to ask about
    for idx, w in enumerate(items):
        for claim in w.record.claims:
            views = _decide_without_vqa(claim, w, detected[idx], cfg)
            if views:
                pending.append((idx, claim, views))

    if vqa is not None and pending:
        model, size = vqa
        sets = cfg.sets() if cfg.alternatives else {}
        options = [compared_values(c, sets) for _, c, _ in pending]
        asks = [
            (items[i].images[v], question)
            for (i, c, views), values in zip(pending, options, strict=True)
            for question in _questions(c, values)
            for v in views
        ]
        answers = iter(ask_once(model, size, asks))
        for (i, claim, views), values in zip(pending, options, strict=True):
            kind = items[i].kind
            by_value = {value: {v: next(answers) for v in views} for value in values or [None]}
            _apply_vqa(claim, by_value[values[0] if values else None], cfg, kind)
            if values:
                _compare(claim, values, by_value, cfg, kind)

    for w in items:
        _propagate_refuted_subjects(w.record.claims)
        if cfg.corrections:
            _correct(w.record.claims)
        w.record.corrected = [
            {"from": c.evidence["corrected"]["text"], "to": c.text}
            for c in w.record.claims
            if c.verdict == Verdict.CORRECTED
        ]
        w.record.removed = [
            c.text for c in w.record.claims if c.verdict == Verdict.REFUTED and c.origin != EXPERT
        ]


def compared_values(claim: Claim, sets: dict[str, tuple[str, ...]]) -> list[str]:
    """The values an attribute claim is compared over: the one it states first, then the
    other values of its set (empty when it states no value of a set, or is no attribute).

    >>> c = Claim("attribute", "The cup is red.", "cup", "Is the cup red?")
    >>> compared_values(c, {"colour": ("blue", "red", "green")})
    ['red', 'blue', 'green']
    """
    if claim.kind != ClaimKind.ATTRIBUTE or not sets:
        return []
    stated = stated_value(claim.question or claim.text, claim.subject, sets)
    if stated is None:
        return []
    attribute, value = stated
    claim.evidence["attribute"] = attribute
    return [value, *alternatives(value, sets[attribute], len(sets[attribute]))]


def _questions(claim: Claim, values: Sequence[str]) -> list[str]:
    question = vqa_question(claim)
    return [question] + [with_value(question, values[0], v) for v in values[1:]]


def _compare(
    claim: Claim,
    values: Sequence[str],
    by_value: dict[Any, dict[int, float]],
    cfg: VerifyConfig,
    kind: MediaKind,
) -> None:
    """The verdict of an attribute claim from its value's P(yes) against its alternatives':
    supported only when the stated value wins by ``margin``; refuted, with the winner in the
    evidence, when it is refuted itself (P(yes) at most ``refuted_threshold``) and another
    value wins; uncertain when another value wins but the stated one is not refuted (a claim
    the expert asks to choose takes the winner)."""
    p = {}
    for value in values:
        answered = [x for x in by_value[value].values() if x == x]
        p[value] = kind.combine(answered) if answered else float("nan")
    if any(x != x for x in p.values()):
        return  # the VQA model could not answer all: the single-question verdict stands
    claim.evidence["alternatives"] = {v: round(x, 4) for v, x in p.items()}
    ranked = sorted(values, key=lambda v: -p[v])
    winner, second = ranked[0], ranked[1] if len(ranked) > 1 else None
    clear = p[winner] >= cfg.supported_threshold and (
        second is None or p[winner] - p[second] >= cfg.margin
    )
    claim.evidence["winner"] = winner if clear else None
    stated = values[0]
    if claim.evidence.get("choose"):
        if clear:
            _restate(claim, stated, winner)
        claim.verdict = Verdict.SUPPORTED if clear else Verdict.UNCERTAIN
        claim.score = p[winner]
    elif clear and winner == stated:
        claim.verdict, claim.score = Verdict.SUPPORTED, p[stated]
    elif clear and p[stated] <= cfg.refuted_threshold:  # refuted as stated, another holds
        claim.verdict, claim.score = Verdict.REFUTED, p[stated]
    elif claim.verdict == Verdict.SUPPORTED or clear:  # another value as likely, or likelier
        claim.verdict = Verdict.UNCERTAIN


def _restate(claim: Claim, old: str, new: str) -> None:
    claim.text = with_value(claim.text, old, new)
    claim.question = with_value(claim.question, old, new)


def _correct(claims: Sequence[Claim]) -> None:
    """Refuted attribute claims whose object stands (not refuted) and whose winning value is
    clear state that value instead: verdict ``corrected``, what they said in the evidence."""
    for claim in claims:
        winner = claim.evidence.get("winner")
        if claim.verdict != Verdict.REFUTED or claim.kind != ClaimKind.ATTRIBUTE or not winner:
            continue
        if "refuted_because" in claim.evidence:
            continue  # its object is not there
        stated = next(iter(claim.evidence["alternatives"]))
        claim.evidence["corrected"] = {"from": stated, "to": winner, "text": claim.text}
        _restate(claim, stated, winner)
        claim.verdict = Verdict.CORRECTED
        claim.score = claim.evidence["alternatives"][winner]


def ask_once(vqa: Any, size: int | None, asks: Sequence[tuple[Any, str]]) -> list[float]:
    """P(yes) from the VQA backend ``vqa`` for each (image, question) of ``asks``, asking each
    distinct pair once and copying its answer to every ask that repeats it. Images are the
    same when they are the same object (an item passes one object for all its claims). The
    pairs go in calls of ``size`` pairs, or, for a backend that encodes each image of a call
    once (:func:`~factcap.roles.batches_by_image`), in calls holding every question about
    ``size`` images.

    >>> class VQA:
    ...     calls = []
    ...     def yes_probability(self, images, questions):
    ...         self.calls.append(list(questions))
    ...         return [0.5 + 0.1 * len(q) for q in questions]
    >>> photo = object()
    >>> ask_once(VQA(), 8, [(photo, "a?"), (photo, "bb?"), (photo, "a?")]), VQA.calls
    ([0.7, 0.8, 0.7], [['a?', 'bb?']])
    """
    first: dict[tuple[int, str], int] = {}
    images: list[Any] = []
    questions: list[str] = []
    order = []
    for image, question in asks:
        key = (id(image), question)
        if key not in first:
            first[key] = len(images)
            images.append(image)
            questions.append(question)
        order.append(first[key])
    call = call_by_image if batches_by_image(vqa) else call_batched
    answers = call(vqa.yes_probability, size, images, questions)
    return [float(answers[at]) for at in order]


def _box(det: dict[str, Any], view: int | None) -> dict[str, Any]:
    out = {"box": [round(float(v), 1) for v in det["box"]], "score": round(float(det["score"]), 4)}
    return out if view is None else {**out, "view": view}


def _decide_without_vqa(
    claim: Claim, work: Work, detections: list[dict[str, list[Any]]] | None, cfg: VerifyConfig
) -> list[int]:
    """Settle what the detector or OCR can settle; returns the images (indices into
    ``work.images``) to ask the VQA model about, empty when no question is needed."""
    claim.verdict, claim.score = Verdict.UNCERTAIN, None
    every = list(range(len(work.views)))
    named = work.kind.names_views
    if claim.kind in (ClaimKind.OBJECT, ClaimKind.COUNT) and detections is not None:
        per_view = [d.get(claim.subject, []) for d in detections]
        claim.evidence["detector_boxes"] = [
            _box(d, work.views[v].index) for v, found in enumerate(per_view) for d in found
        ]
        claim.evidence["detected_count"] = max((len(f) for f in per_view), default=0)
        seen = [v for v, found in enumerate(per_view) if found]
        if named:
            claim.evidence["found_on_views"] = seen
        if claim.kind == ClaimKind.OBJECT:
            if seen:
                best = max(float(d["score"]) for found in per_view for d in found)
                claim.verdict, claim.score = Verdict.SUPPORTED, best
                return seen if claim.origin == EXPERT else []  # the expert's: VQA asked too
            claim.verdict, claim.score = Verdict.REFUTED, 0.0
            claim.evidence["detector"] = "no box above the detector's threshold" + (
                " on any view" if named else ""
            )
        elif seen:
            return seen  # a count: asked where its object was found
    if claim.kind == ClaimKind.TEXT and "ocr_score" in claim.evidence:
        claim.verdict, claim.score = Verdict.SUPPORTED, claim.evidence["ocr_score"]
        claim.evidence["ocr_match"] = claim.subject
        return []  # read by OCR itself: its confidence is the score
    if claim.kind == ClaimKind.NAME:
        return _decide_name(claim, work, cfg)
    if claim.kind == ClaimKind.TEXT and _read_by_ocr(claim, work, cfg):
        return []
    if claim.kind == ClaimKind.ATTRIBUTE and detections is not None:
        seen = [v for v, d in enumerate(detections) if d.get(claim.subject)]
        return seen or every  # asked where its object was found, else on every view
    return every


#: Why an unconfirmed name stays uncertain (in its evidence).
NAME_UNCHECKED = "no checker can confirm a name, place, brand or date from the pixels"


def _read_by_ocr(claim: Claim, work: Work, cfg: VerifyConfig) -> bool:
    """Match the claimed text against the OCR spans (evidence kept); supported when close
    enough. False when OCR did not run."""
    if work.ocr_spans is None:
        return False
    similarity, matched = _text_similarity(claim, work.ocr_spans)
    claim.evidence["ocr_match"] = matched
    claim.evidence["ocr_similarity"] = round(similarity, 4)
    if similarity >= cfg.text_match_threshold:
        claim.verdict, claim.score = Verdict.SUPPORTED, similarity
        return True
    return False


def _decide_name(claim: Claim, work: Work, cfg: VerifyConfig) -> list[int]:
    """A name is supported only when OCR reads it; otherwise it stays uncertain."""
    if work.ocr_spans and _read_by_ocr(claim, work, cfg):
        return []
    claim.evidence["checker"] = NAME_UNCHECKED + (
        "; OCR did not read it in the image" if work.ocr_spans is not None else ""
    )
    return []


def _apply_vqa(claim: Claim, by_view: dict[int, float], cfg: VerifyConfig, kind: MediaKind) -> None:
    """The verdict from the VQA model's P(yes) over the views asked, combined as the media
    kind says (a 3D asset's claim holds when some view shows it)."""
    claim.evidence["vqa_question"] = vqa_question(claim)
    answered = [p for p in by_view.values() if p == p]
    if kind.names_views:
        claim.evidence["vqa_p_yes_by_view"] = {
            str(v): (round(p, 4) if p == p else None) for v, p in by_view.items()
        }
    if not answered:  # NaN: the VQA backend could not answer; the verdict stands as it was
        claim.evidence["vqa_p_yes"] = None
        claim.evidence["vqa_answer"] = "unavailable"
        return
    p = kind.combine(answered)
    claim.evidence["vqa_p_yes"] = round(p, 4)
    claim.evidence["vqa_answer"] = "yes" if p >= 0.5 else "no"
    if claim.kind == ClaimKind.OBJECT and claim.verdict == Verdict.REFUTED:
        if cfg.vqa_rescue and p >= cfg.supported_threshold:
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
