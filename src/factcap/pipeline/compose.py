"""Stage 3, compose: the LLM writes the final caption in each requested style.

All styles reuse the same claims and verdicts; for each style, the conversations of all images
in the batch go to the LLM in one ``chat`` call.

Guarantees on the result, whatever the LLM answers:

- every sentence (for ``t2i``, every comma-separated phrase) that states refuted content is
  cut: one naming a refuted object; one pairing a refuted count's number with its object
  ("two cats"); one naming a refuted attribute's object together with the attribute's own
  words ("cat" and "pink" for "The cat is pink.");
- an empty or unusable answer, or one left empty by the cuts, is replaced by the **fallback
  caption**: the proposals' sentences that state no refuted content, de-duplicated, shaped to
  the style (the first sentence for ``short`` and ``alt``, comma-joined phrases for ``t2i``).
  The record's ``notes`` say when text was cut and when the fallback was used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from factcap.pipeline.parsing import clean_caption
from factcap.pipeline.prompts import load_prompt, quote_data, render
from factcap.pipeline.verify import proposals_block
from factcap.pipeline.work import Work, fail_all, live, timed
from factcap.schema import Claim
from factcap.text.english import NUMBER_WORDS, content_words

INSTRUCTION = "instruction"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def verdicts_block(claims: Sequence[Claim]) -> str:
    """The checked facts as delimited data, one ``[i] SUPPORTED: "..."`` line per claim."""
    if not claims:
        return "<data>\n(no facts could be checked)\n</data>"
    return quote_data([c.text for c in claims], [c.verdict.upper() for c in claims], "{}")


def style_text(style: str, instruction: str | None, prompts: Mapping[str, str] | None) -> str:
    if style == INSTRUCTION:
        return render(load_prompt("style_instruction", prompts), instruction=instruction or "")
    return load_prompt(f"style_{style}", prompts)


Matcher = Callable[[str], bool]


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)


def _noun(subject: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(subject)}(e?s)?\b", re.I)


def refuted_matchers(claims: Sequence[Claim]) -> list[Matcher]:
    """One test per refuted claim: does a piece of text state it? (module docstring)."""
    matchers: list[Matcher] = []
    for c in claims:
        if c.verdict != "refuted" or not c.subject:
            continue
        noun = _noun(c.subject)
        if c.kind == "object":
            matchers.append(lambda t, noun=noun: bool(noun.search(t)))
        elif c.kind == "count" and c.count is not None:
            names = [str(c.count)] + [w for w, n in NUMBER_WORDS.items() if n == c.count]
            pattern = re.compile(
                rf"\b({'|'.join(map(re.escape, names))})\s+(\w+\s+){{0,2}}"
                rf"{re.escape(c.subject)}(e?s)?\b",
                re.I,
            )
            matchers.append(lambda t, p=pattern: bool(p.search(t)))
        elif c.kind == "attribute":
            own = set(content_words(c.text)) - set(content_words(c.subject))
            if own:
                attr = [_words(w) for w in sorted(own)]
                matchers.append(
                    lambda t, noun=noun, attr=attr: (
                        bool(noun.search(t)) and all(a.search(t) for a in attr)
                    )
                )
    return matchers


def _pieces(text: str, style: str) -> list[str]:
    if style == "t2i":
        return [p.strip() for p in text.split(",") if p.strip()]
    return [p.strip() for p in _SENTENCE.split(text) if p.strip()]


def drop_refuted(text: str, matchers: Sequence[Matcher], style: str = "detailed") -> str:
    """``text`` without the sentences (``t2i``: phrases) that any matcher flags."""
    if not matchers:
        return text
    kept = [p for p in _pieces(text, style) if not any(m(p) for m in matchers)]
    return (", " if style == "t2i" else " ").join(kept).strip()


def fallback_caption(work: Work, style: str) -> str:
    """The documented fallback caption for ``style`` (see module docstring)."""
    banned = refuted_matchers(work.record.claims)
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
                    "content": render(
                        template,
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
    written = clean_caption(answer)
    text = drop_refuted(written, refuted_matchers(work.record.claims), style)
    usable = len(text) >= 3 and any(ch.isalpha() for ch in text)
    if text != written and written:
        work.record.notes.append(f"captions.{style}: cut what the LLM wrote about refuted claims")
    if usable:
        return text
    work.record.notes.append(
        f"captions.{style}: the LLM answer was "
        + ("left empty by those cuts" if written and text != written else "empty or unusable")
        + "; used the fallback caption built from the proposals"
    )
    return fallback_caption(work, style)
