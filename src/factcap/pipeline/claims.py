"""Stage ``claims``: the LLM turns the proposals into checkable claims.

One LLM conversation per image (all images of a batch in one ``chat`` call), asking for JSON
that follows :data:`~factcap.pipeline.parsing.CLAIMS_JSON_SCHEMA` when the LLM takes a
``json_schema`` (an ``openai:`` server's structured output; others ignore it). An answer that
cannot be parsed gets one repair retry; if that fails too, the claims are the noun phrases of
the proposals (:func:`factcap.pipeline.parsing.fallback_claims`) and the record says so in
``notes``. OCR spans also become ``text`` claims directly.

Only proposals that ranking kept (:mod:`factcap.pipeline.rank`) enter the prompt. When an item
has alt-text (:mod:`factcap.pipeline.alt_text`) its prompt says what alt-text is worth
(:data:`ALT_TEXT_NOTE`, after the proposals, so the shared start of the prompt stays the same),
and a claim that only the alt-text makes gets ``origin: "alt_text"``
(:func:`mark_alt_text_claims`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Collection, Mapping, Sequence
from functools import partial
from typing import Any

from factcap.config import Config
from factcap.pipeline.alt_text import ALT_TEXT
from factcap.pipeline.parsing import CLAIMS_JSON_SCHEMA, fallback_claims, parse_claims
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, live
from factcap.prompts import load_prompt, quote_data, render
from factcap.schema import Claim, ClaimKind, Proposal
from factcap.text.english import content_words, singular
from factcap.text.jsonrepair import ParseError

#: Added after the proposals in the claims prompt of an item that has alt-text.
ALT_TEXT_NOTE = """

The caption from alt_text is the image's web alt-text, written by a person for the web page.
It may know real-world facts that looking cannot tell (proper names, places, brands, dates),
but it may also be unrelated to the image or badly formed. Take its visual facts like any
caption's. For a proper name, place, brand or date, use the kind "name" with "subject" set to
the name itself, e.g. {"kind": "name", "text": "The tower is the Eiffel Tower.",
"subject": "Eiffel Tower"}."""


def stages(config: Config) -> list[Stage]:
    """The ``claims`` stage (always: the pipeline needs claims to check)."""
    return [Stage("claims", "llm", run, fails_as="LLM {model} failed while extracting claims")]


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The stage function: :func:`extract_claims` with the config's LLM settings."""
    if model is None:
        raise ValueError("the claims stage needs an LLM")
    cfg = context.config
    extract_claims(
        batch,
        model.backend,
        max_new_tokens=cfg.llm.max_new_tokens,
        temperature=cfg.llm.temperature,
        max_claims=cfg.verify.max_claims,
        prompts=cfg.prompts,
    )


def proposals_block(work: Work, without: Collection[str] = ()) -> str:
    """The item's proposals that ranking kept (and whose model is not in ``without``), as
    delimited, quoted data for a prompt (a 3D asset's each with the view it describes)."""
    props = [p for p in work.record.proposals if p.kept and p.model not in without]
    labels = [p.model if p.view is None else f"{p.model}, view {p.view}" for p in props]
    return quote_data([p.text for p in props], labels)


def extract_claims(
    batch: Sequence[Work],
    llm: Any,
    *,
    max_new_tokens: int,
    temperature: float,
    max_claims: int,
    prompts: Mapping[str, str] | None = None,
) -> None:
    """Fill ``record.claims`` of the live items from their proposals (see module docstring).
    An LLM that raises on the first call raises here (the caller fails the items)."""
    items = live(batch)
    if not items:
        return
    template = load_prompt("claims", prompts)
    conversations = [
        [{"role": "user", "content": render(template, proposals=_claims_block(w))}] for w in items
    ]
    structured = {"json_schema": CLAIMS_JSON_SCHEMA} if accepts_json_schema(llm) else {}
    ask = partial(llm.chat, max_new_tokens=max_new_tokens, temperature=temperature, **structured)
    answers = ask(conversations)
    parsed = [_try_parse(a, max_claims) for a in answers]
    retry = [i for i, claims in enumerate(parsed) if claims is None]
    if retry:
        repair = {"role": "user", "content": load_prompt("repair", prompts)}
        followups = [
            [*conversations[i], {"role": "assistant", "content": answers[i]}, repair] for i in retry
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
        mark_alt_text_claims(claims, w.record.proposals)
        w.record.claims = claims + _ocr_claims(w, known, max_claims - len(claims))


def _claims_block(work: Work) -> str:
    block = proposals_block(work)
    has_alt = any(p.model == ALT_TEXT and p.kept for p in work.record.proposals)
    return block + ALT_TEXT_NOTE if has_alt else block


def _words(text: str) -> set[str]:
    return {singular(w) for w in content_words(text)}


def alt_text_words(proposals: Sequence[Proposal]) -> set[str]:
    """The content words (singular) of the kept alt-text proposals."""
    return set().union(*(_words(p.text) for p in proposals if p.model == ALT_TEXT and p.kept))


def words_within(claim: Claim, words: set[str]) -> bool:
    """Whether every content word of the claim's subject (its text without one) is in ``words``."""
    own = _words(claim.subject or claim.text)
    return bool(own) and own <= words


def mark_alt_text_claims(claims: Sequence[Claim], proposals: Sequence[Proposal]) -> None:
    """Set ``origin = "alt_text"`` on the claims that only the alt-text makes: every content
    word of the claim's subject (its text when it has none) is in the alt-text, and some is in
    no other kept proposal.

    >>> from factcap.schema import Proposal
    >>> props = [Proposal("cap", "A tower at dusk."), Proposal("alt_text", "Eiffel Tower, Paris")]
    >>> claims = [Claim("object", "There is a tower.", "tower"), Claim("name", "It is the Eiffel Tower.", "eiffel tower")]
    >>> mark_alt_text_claims(claims, props)
    >>> [c.origin for c in claims]
    [None, 'alt_text']
    """
    alt_words = alt_text_words(proposals)
    if not alt_words:
        return
    others = set().union(*(_words(p.text) for p in proposals if p.model != ALT_TEXT and p.kept))
    for claim in claims:
        if words_within(claim, alt_words) and not words_within(claim, others):
            claim.origin = ALT_TEXT


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
                    kind=ClaimKind.TEXT,
                    text=text,
                    subject=read,
                    question=f"Does the image show the text {json.dumps(read, ensure_ascii=False)}?",
                    evidence={"ocr_score": round(float(span.score), 4)},
                )
            )
    return claims
