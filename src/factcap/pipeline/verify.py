"""Stage 2, verify: the LLM turns proposals into claims; the detector, VQA and OCR check them.

Claim extraction: one LLM conversation per image (all images of a batch in one ``chat`` call),
asking for JSON that follows :data:`~factcap.pipeline.parsing.CLAIMS_JSON_SCHEMA` when the LLM
takes a ``json_schema`` (an ``openai:`` server's structured output; others ignore it).
An answer that cannot be parsed gets one repair retry; if that fails too, the claims are the
noun phrases of the proposals (:func:`factcap.pipeline.parsing.fallback_claims`) and the record
says so in ``notes``. OCR spans also become ``text`` claims directly.

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
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from factcap.config import VerifyConfig
from factcap.pipeline.parsing import CLAIMS_JSON_SCHEMA, fallback_claims, parse_claims
from factcap.pipeline.prompts import load_prompt, quote_data, render
from factcap.pipeline.work import Work, call_batched, fail_all, live, timed
from factcap.schema import Claim
from factcap.text.jsonrepair import ParseError


def proposals_block(work: Work) -> str:
    """The item's proposals as delimited, quoted data for a prompt."""
    props = work.record.proposals
    return quote_data([p.text for p in props], [p.model for p in props])


def extract_claims(
    batch: Sequence[Work],
    llm: Any,
    *,
    max_new_tokens: int,
    temperature: float,
    max_claims: int,
    prompts: Mapping[str, str] | None = None,
) -> None:
    """Fill ``record.claims`` of the live items from their proposals (see module docstring)."""
    items = live(batch)
    if not items:
        return
    template = load_prompt("claims", prompts)
    conversations = [
        [{"role": "user", "content": render(template, proposals=proposals_block(w))}] for w in items
    ]
    structured = {"json_schema": CLAIMS_JSON_SCHEMA} if accepts_json_schema(llm) else {}
    ask = partial(llm.chat, max_new_tokens=max_new_tokens, temperature=temperature, **structured)
    with timed(items, "claims"):
        try:
            answers = ask(conversations)
        except Exception as err:
            fail_all(items, err, f"LLM {llm.name} failed while extracting claims")
            return
        parsed = [_try_parse(a, max_claims) for a in answers]
        retry = [i for i, claims in enumerate(parsed) if claims is None]
        if retry:
            repair = {"role": "user", "content": load_prompt("repair", prompts)}
            followups = [
                [*conversations[i], {"role": "assistant", "content": answers[i]}, repair]
                for i in retry
            ]
            try:
                again: list[str | None] = list(ask(followups))
            except Exception as err:  # costs only the retry: these items fall back
                again = [None] * len(retry)
                for i in retry:
                    items[i].record.notes.append(
                        f"claims: the repair retry failed ({type(err).__name__})"
                    )
            for i, answer in zip(retry, again, strict=True):
                parsed[i] = _try_parse(answer, max_claims) if answer is not None else None
                if parsed[i] is not None:
                    items[i].record.notes.append("claims: parsed after one repair retry")
    for w, claims in zip(items, parsed, strict=True):
        if claims is None:
            captions = [p.text for p in w.record.proposals if p.model != w.ocr_model]
            claims = fallback_claims(captions, max_claims)
            w.record.notes.append(
                "claims: the LLM answer was not parseable after one repair retry; "
                "used noun phrases from the proposals"
            )
        known = {c.text.lower() for c in claims}
        w.record.claims = claims + _ocr_claims(w, known, max_claims - len(claims))


def accepts_json_schema(llm: Any) -> bool:
    """Whether ``llm.chat`` takes a ``json_schema`` keyword (LLMs written before it do not)."""
    try:
        params = inspect.signature(llm.chat).parameters
    except (TypeError, ValueError):
        return False
    return "json_schema" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


def _try_parse(answer: str, max_claims: int) -> list[Claim] | None:
    try:
        return parse_claims(answer, max_claims)
    except ParseError:
        return None


def _ocr_claims(work: Work, known: set[str], room: int) -> list[Claim]:
    """``text`` claims straight from OCR (at most ``room``), scored by the OCR confidence."""
    claims = []
    for span in work.ocr_spans or []:
        if len(claims) >= room:
            break
        read = span.text.strip()
        text = f"The text {json.dumps(read, ensure_ascii=False)} is visible."
        if text.lower() not in known:
            claims.append(
                Claim(
                    kind="text",
                    text=text,
                    subject=read,
                    question=f"Does the image show the text {json.dumps(read, ensure_ascii=False)}?",
                    evidence={"ocr_score": round(float(span.score), 4)},
                )
            )
    return claims


def _question(claim: Claim) -> str:
    if claim.question:
        return claim.question
    if claim.kind == "object":
        return f"Is there a {claim.subject} in the image?"
    if claim.kind == "count":
        return f"Are there {claim.count} {claim.subject} in the image?"
    if claim.kind == "text":
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
    batch: Sequence[Work],
    detector: tuple[Any, int | None] | None,
    vqa: tuple[Any, int | None] | None,
    cfg: VerifyConfig,
) -> None:
    """Give every claim of the live items a verdict, score and evidence (module docstring).

    The two steps, :func:`detect_claims` then :func:`judge_claims`, may also run apart (e.g.
    each in its own worker): the detections travel on the work items in between.
    """
    detect_claims(batch, detector)
    judge_claims(batch, vqa, cfg)


DETECTIONS = "detections"
"""Key of ``Work.extra`` holding an item's detections by query, from :func:`detect_claims`
to :func:`judge_claims`."""


def detect_claims(batch: Sequence[Work], detector: tuple[Any, int | None] | None) -> None:
    """Step 1 of :func:`check_claims`: all object subjects of each live item with claims go to
    the detector in one call; ``extra["detections"]`` gets {query: [Detection]} per item.
    Without a detector nothing happens (and the verdicts are left to VQA)."""
    items = [w for w in live(batch) if w.record.claims]
    if not items or detector is None:
        return
    model, size = detector
    queries = [
        list(
            dict.fromkeys(
                c.subject for c in w.record.claims if c.kind in ("object", "count") and c.subject
            )
        )
        for w in items
    ]
    with timed(items, "detect"):
        try:
            found = call_batched(model.detect, size, [w.image for w in items], queries)
        except Exception as err:
            fail_all(items, err, f"detector {model.name} failed")
            return
    for w, detections in zip(items, found, strict=False):  # as many as the detector gave
        per_query: dict[str, list[Any]] = {}
        for det in detections:
            per_query.setdefault(det.query, []).append(det)
        w.extra[DETECTIONS] = per_query


def judge_claims(
    batch: Sequence[Work], vqa: tuple[Any, int | None] | None, cfg: VerifyConfig
) -> None:
    """Step 2 of :func:`check_claims`: verdicts from the detections (taken off the items),
    OCR and the VQA model's answers."""
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
                    [_question(c) for _, c in pending],
                )
            except Exception as err:
                fail_all(items, err, f"VQA {model.name} failed")
                return
        for (_, claim), p in zip(pending, probs, strict=True):
            _apply_vqa(claim, float(p), cfg)

    for w in items:
        _propagate_refuted_subjects(w.record.claims)
        w.record.removed = [c.text for c in w.record.claims if c.verdict == "refuted"]


def _decide_without_vqa(
    claim: Claim, work: Work, detections: dict[str, list[Any]] | None, cfg: VerifyConfig
) -> bool:
    """Settle what the detector or OCR can settle; True when no VQA question is needed."""
    claim.verdict, claim.score = "uncertain", None
    if claim.kind in ("object", "count") and detections is not None:
        boxes = detections.get(claim.subject, [])
        claim.evidence["detector_boxes"] = [
            {"box": [round(float(v), 1) for v in d.box], "score": round(float(d.score), 4)}
            for d in boxes
        ]
        claim.evidence["detected_count"] = len(boxes)
        if claim.kind == "object":
            if boxes:
                claim.verdict, claim.score = "supported", max(float(d.score) for d in boxes)
                return True
            claim.verdict, claim.score = "refuted", 0.0
            claim.evidence["detector"] = "no box above the detector's threshold"
    if claim.kind == "text" and "ocr_score" in claim.evidence:
        claim.verdict, claim.score = "supported", claim.evidence["ocr_score"]
        claim.evidence["ocr_match"] = claim.subject
        return True  # read by OCR itself: its confidence is the score
    if claim.kind == "text" and work.ocr_spans is not None:
        similarity, matched = _text_similarity(claim, work.ocr_spans)
        claim.evidence["ocr_match"] = matched
        claim.evidence["ocr_similarity"] = round(similarity, 4)
        if similarity >= cfg.text_match_threshold:
            claim.verdict, claim.score = "supported", similarity
            return True
    return False


def _apply_vqa(claim: Claim, p: float, cfg: VerifyConfig) -> None:
    claim.evidence["vqa_question"] = _question(claim)
    if p != p:  # NaN: the VQA backend could not answer; the verdict stands as it was
        claim.evidence["vqa_p_yes"] = None
        claim.evidence["vqa_answer"] = "unavailable"
        return
    claim.evidence["vqa_p_yes"] = round(p, 4)
    claim.evidence["vqa_answer"] = "yes" if p >= 0.5 else "no"
    if claim.kind == "object" and claim.verdict == "refuted":
        if p >= cfg.supported_threshold:
            claim.verdict, claim.score = "uncertain", p
        return  # the detector found nothing and VQA does not contradict it strongly
    claim.score = p
    if p >= cfg.supported_threshold:
        claim.verdict = "supported"
    elif p <= cfg.refuted_threshold:
        claim.verdict = "refuted"
    else:
        claim.verdict = "uncertain"


def _propagate_refuted_subjects(claims: Sequence[Claim]) -> None:
    refuted = {c.subject for c in claims if c.kind == "object" and c.verdict == "refuted"}
    for claim in claims:
        if claim.kind in ("attribute", "count") and claim.subject in refuted:
            claim.verdict = "refuted"
            claim.evidence["refuted_because"] = f"no {claim.subject} was found in the image"
