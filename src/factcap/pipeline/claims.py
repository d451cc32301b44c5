"""Stage ``claims``: the LLM turns the proposals into checkable claims.

One LLM conversation per image (all images of a batch in one ``chat`` call), asking for JSON
that follows :data:`~factcap.pipeline.parsing.CLAIMS_JSON_SCHEMA` when the LLM takes a
``json_schema`` (an ``openai:`` server's structured output; others ignore it). An answer that
cannot be parsed gets one repair retry; if that fails too, the claims are the noun phrases of
the proposals (:func:`factcap.pipeline.parsing.fallback_claims`) and the record says so in
``notes``. OCR spans also become ``text`` claims directly.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from factcap.config import Config
from factcap.pipeline.parsing import CLAIMS_JSON_SCHEMA, fallback_claims, parse_claims
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, fail_all, live, timed
from factcap.prompts import load_prompt, quote_data, render
from factcap.schema import Claim, ClaimKind
from factcap.text.jsonrepair import ParseError


def stages(config: Config) -> list[Stage]:
    """The ``claims`` stage (always: the pipeline needs claims to check)."""
    return [Stage("claims", "llm", run)]


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


def proposals_block(work: Work) -> str:
    """The item's proposals as delimited, quoted data for a prompt (a 3D asset's each with
    the view it describes)."""
    props = work.record.proposals
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
                    kind=ClaimKind.TEXT,
                    text=text,
                    subject=read,
                    question=f"Does the image show the text {json.dumps(read, ensure_ascii=False)}?",
                    evidence={"ocr_score": round(float(span.score), 4)},
                )
            )
    return claims
