"""Stage 3, compose: the LLM writes the final caption in each requested style.

All styles reuse the same claims and verdicts; for each style, the conversations of all images
in the batch go to the LLM in one ``chat`` call.

Guarantees on the result, whatever the LLM answers:

- a sentence that names the subject of a refuted object claim is cut from the caption;
- an empty or unusable answer is replaced by the **fallback caption**: the proposals' sentences
  that name no refuted object, de-duplicated, shaped to the style (the first sentence for
  ``short`` and ``alt``, comma-joined phrases for ``t2i``); the record's ``notes`` say so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from factcap.pipeline.parsing import clean_caption
from factcap.pipeline.prompts import load_prompt, quote_data
from factcap.pipeline.verify import proposals_block
from factcap.pipeline.work import Work, fail_all, live, timed
from factcap.schema import Claim

INSTRUCTION = "instruction"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def verdicts_block(claims: Sequence[Claim]) -> str:
    """The checked facts as delimited data: ``supported: ...`` / ``refuted: ...`` lines."""
    if not claims:
        return "<data>\n(no facts could be checked)\n</data>"
    return quote_data([c.text for c in claims], [c.verdict for c in claims])


def style_text(style: str, instruction: str | None, prompts: Mapping[str, str] | None) -> str:
    if style == INSTRUCTION:
        return load_prompt("style_instruction", prompts).format(instruction=instruction or "")
    return load_prompt(f"style_{style}", prompts)


def refuted_subjects(claims: Sequence[Claim]) -> list[str]:
    return sorted(
        {c.subject for c in claims if c.kind == "object" and c.verdict == "refuted" and c.subject}
    )


def drop_refuted(text: str, subjects: Sequence[str]) -> str:
    """``text`` without the sentences that name any of ``subjects`` (whole words)."""
    if not subjects:
        return text
    patterns = [re.compile(rf"\b{re.escape(s)}(e?s)?\b", re.I) for s in subjects]
    kept = [s for s in _SENTENCE.split(text) if not any(p.search(s) for p in patterns)]
    return " ".join(kept).strip()


def fallback_caption(work: Work, style: str) -> str:
    """The documented fallback caption for ``style`` (see module docstring)."""
    banned = refuted_subjects(work.record.claims)
    sentences: list[str] = []
    seen: set[str] = set()
    for proposal in work.record.proposals:
        for sentence in _SENTENCE.split(proposal.text.strip()):
            sentence = drop_refuted(sentence.strip(), banned)
            key = sentence.lower().rstrip(".")
            if sentence and key not in seen:
                seen.add(key)
                sentences.append(sentence)
    if not sentences:
        kept = [
            c.subject
            for c in work.record.claims
            if c.kind == "object" and c.verdict != "refuted" and c.subject
        ]
        sentences = [f"An image showing {', '.join(kept)}."] if kept else []
    if not sentences:
        return ""
    if style == "t2i":
        return ", ".join(s.rstrip(".") for s in sentences)
    if style in ("short", "alt"):
        return sentences[0]
    return " ".join(s if s.endswith((".", "!", "?")) else s + "." for s in sentences)


def compose(
    batch: Sequence[Work],
    llm: Any,
    styles: Sequence[str],
    *,
    instruction: str | None,
    max_new_tokens: int,
    temperature: float,
    prompts: Mapping[str, str] | None = None,
) -> None:
    """Fill ``record.captions`` (style → text) for the live items of ``batch``."""
    wanted = list(styles) + ([INSTRUCTION] if instruction else [])
    template = load_prompt("compose", prompts)
    for style in wanted:
        items = live(batch)
        if not items:
            return
        style_prompt = style_text(style, instruction, prompts)
        conversations = [
            [
                {
                    "role": "user",
                    "content": template.format(
                        proposals=proposals_block(w),
                        verdicts=verdicts_block(w.record.claims),
                        style=style_prompt,
                    ),
                }
            ]
            for w in items
        ]
        with timed(items, f"compose:{style}"):
            try:
                answers = llm.chat(
                    conversations, max_new_tokens=max_new_tokens, temperature=temperature
                )
            except Exception as err:
                fail_all(items, err, f"LLM {llm.name} failed while composing ({style})")
                return
        for w, answer in zip(items, answers, strict=True):
            w.record.captions[style] = _final_text(w, style, answer)


def _final_text(work: Work, style: str, answer: str) -> str:
    text = drop_refuted(clean_caption(answer), refuted_subjects(work.record.claims))
    if len(text) >= 3 and any(ch.isalpha() for ch in text):
        return text
    work.record.notes.append(
        f"captions.{style}: the LLM answer was empty or unusable; "
        "used the fallback caption built from the proposals"
    )
    return fallback_caption(work, style)
