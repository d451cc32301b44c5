"""Stage ``compose``: the LLM writes the final caption in each requested style.

All styles reuse the same claims and verdicts; for each style, the conversations of all images
in the batch go to the LLM in one ``chat`` call. A style (:mod:`factcap.prompts.style`) is
the prompt paragraph plus how its captions are cut (``pieces``) and filled in (``fallback``).

Guarantees on the result, whatever the LLM answers:

- every sentence (for a style whose pieces are ``phrases``, like ``t2i``: every
  comma-separated phrase) that states refuted content is cut: one naming a refuted object; one
  pairing a refuted count's number with its object ("two cats"); one naming a refuted
  attribute's object together with the attribute's own words ("cat" and "pink" for "The cat
  is pink.");
- an empty or unusable answer, or one left empty by the cuts, is replaced by the **fallback
  caption**: the proposals' sentences that state no refuted content, de-duplicated, shaped to
  the style (the first sentence for ``fallback: first`` styles such as ``short`` and ``alt``,
  comma-joined phrases for ``phrases`` styles). The record's ``notes`` say when text was cut
  and when the fallback was used.

Alt-text (:mod:`factcap.pipeline.alt_text`): a name, place, brand or date that only the
alt-text gives (``origin: alt_text``) and OCR did not confirm is *unconfirmed*. With
``alt_text.unconfirmed_names: label`` (the default) it is listed among the checked facts as
``ALT-TEXT LABEL`` and may appear only as the alt-text's label: a piece that names it without
a labelling word ("labelled", "captioned", "titled", "tagged", "described as") is cut. With
``drop``, or when the alt-text looks unrelated to the image (of the objects it names, some
were refuted and none supported; the record's notes say so), its names are not listed, the
alt-text is left out of the drafts, and any piece naming them is cut. The fallback caption
never uses the alt-text, nor proposals that ranking did not keep.

Questions (:mod:`factcap.pipeline.question`): an item with a question (``record.question.text``)
also gets the styles that ``added_by: question`` marks (the shipped ``question`` style), whose
prompt holds the question as quoted data; items without one do not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from factcap.config import AltTextConfig, Config
from factcap.pipeline.alt_text import ALT_TEXT
from factcap.pipeline.check import EXPERT
from factcap.pipeline.claims import alt_text_words, proposals_block, words_within
from factcap.pipeline.parsing import clean_caption
from factcap.pipeline.stage import BoundModel, Stage, StageContext
from factcap.pipeline.work import Work, live
from factcap.prompts import load_prompt, quote_data, quote_question, render
from factcap.prompts.style import INSTRUCTION, Style, added_by, shipped_styles
from factcap.schema import Claim, ClaimKind, Verdict
from factcap.text.attributes import value_words, with_value
from factcap.text.english import NUMBER_WORDS, content_words
from factcap.text.pieces import SENTENCE_BREAK, split_pieces


def stages(config: Config) -> list[Stage]:
    """The ``compose`` stage (always: it writes the captions)."""
    return [Stage("compose", "llm", run, fails_as="LLM {model} failed while composing")]


def run(batch: Sequence[Work], model: BoundModel | None, context: StageContext) -> None:
    """The stage function: :func:`compose` for the context's styles and instruction."""
    if model is None:
        raise ValueError("the compose stage needs an LLM")
    cfg = context.config
    compose(
        batch,
        model.backend,
        context.styles,
        instruction=context.instruction,
        max_new_tokens=cfg.llm.max_new_tokens,
        temperature=cfg.llm.temperature,
        prompts=cfg.prompts,
        styles_known=cfg.style_registry(),
        alt_text=cfg.alt_text,
    )


#: The label of an unconfirmed alt-text name among the checked facts.
ALT_TEXT_LABEL = "ALT-TEXT LABEL"
#: Added after the checked facts when some are alt-text labels.
ALT_TEXT_RULE = (
    "\nFacts marked ALT-TEXT LABEL come from the image's web alt-text and could not be "
    'checked: mention such a name only as what the image is labelled as ("labelled as ..."), '
    "never as something seen.\n"
)


def verdicts_block(claims: Sequence[Claim], hidden: Sequence[Claim] = ()) -> str:
    """The checked facts as delimited data, one ``[i] SUPPORTED: "..."`` line per claim
    (``ALT-TEXT LABEL`` for an unconfirmed alt-text name); ``hidden`` claims are left out, and
    so are the expert's that did not hold (no draft names them). A corrected claim is two
    lines: what it said, ``REFUTED``, and what holds instead, ``SUPPORTED``."""
    texts: list[str] = []
    labels: list[str] = []
    for c in claims:
        if any(c is h for h in hidden) or (c.origin == EXPERT and c.verdict != Verdict.SUPPORTED):
            continue
        if c.verdict == Verdict.CORRECTED:
            texts.append(c.evidence["corrected"]["text"])
            labels.append(Verdict.REFUTED.upper())
        texts.append(c.text)
        labels.append(
            ALT_TEXT_LABEL
            if is_unconfirmed_name(c)
            else Verdict.SUPPORTED.upper()
            if c.verdict == Verdict.CORRECTED
            else c.verdict.upper()
        )
    if not texts:
        return "<data>\n(no facts could be checked)\n</data>"
    block = quote_data(texts, labels, "{}")
    return block + ALT_TEXT_RULE if ALT_TEXT_LABEL in labels else block


def value_fixes(claims: Sequence[Claim]) -> list[tuple[re.Pattern[str], str, str]]:
    """For each attribute claim whose value the checks settled against its alternatives
    (``evidence["winner"]``), the values that lost, next to its subject ("a large red
    circle", "the circle is large"): ``(pattern, lost value, winner)``.

    >>> c = Claim("attribute", "The circle is small.", "circle", verdict="corrected",
    ...           evidence={"alternatives": {"large": 0.1, "small": 0.9}, "winner": "small"})
    >>> fix_values("A large circle and a large square.", value_fixes([c]))
    'A small circle and a large square.'
    """
    fixes = []
    for c in claims:
        winner = c.evidence.get("winner")
        if c.kind != ClaimKind.ATTRIBUTE or not winner or not c.subject:
            continue
        if c.verdict not in (Verdict.SUPPORTED, Verdict.CORRECTED):
            continue
        for lost in c.evidence.get("alternatives", {}):
            if lost == winner:
                continue
            words = "|".join(re.escape(w) for w in value_words(lost))
            subject = re.escape(c.subject)
            pattern = re.compile(
                rf"\b(?P<value>{words})(?=\s+{subject}(?:e?s)?\b)"
                rf"|(?P<said>\b{subject}(?:e?s)?\s+(?:is|are)\s+)(?P<stated>{words})\b",
                re.I,
            )
            fixes.append((pattern, lost, winner))
    return fixes


def fix_values(text: str, fixes: Sequence[tuple[re.Pattern[str], str, str]]) -> str:
    """``text`` with each lost value next to its subject replaced by the winning one."""
    for pattern, lost, winner in fixes:

        def swap(m: re.Match[str], lost: str = lost, winner: str = winner) -> str:
            if m.group("value"):
                return with_value(m.group("value"), lost, winner)
            return m.group("said") + with_value(m.group("stated"), lost, winner)

        text = pattern.sub(swap, text)
    return text


def is_unconfirmed_name(claim: Claim) -> bool:
    """Whether ``claim`` is a name only the alt-text gives that nothing confirmed."""
    return (
        claim.kind == ClaimKind.NAME
        and claim.origin == ALT_TEXT
        and claim.verdict != Verdict.SUPPORTED
        and bool(claim.subject)
    )


def alt_text_unrelated(work: Work) -> bool:
    """Whether the alt-text looks unrelated to the image: of the object claims it names
    (alone or with a captioner), some were refuted and none supported."""
    words = alt_text_words(work.record.proposals)
    named = [c for c in work.record.claims if c.kind == ClaimKind.OBJECT and words_within(c, words)]
    return any(c.verdict == Verdict.REFUTED for c in named) and not any(
        c.verdict == Verdict.SUPPORTED for c in named
    )


def style_text(style: Style, instruction: str | None, question: str | None = None) -> str:
    """The style's paragraph of the compose prompt (with the instruction, and the item's
    question as quoted data, filled in)."""
    return render(
        style.prompt,
        instruction=instruction or "",
        question=quote_question(question) if question else "",
    )


Matcher = Callable[[str], bool]


def _words(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.I)


def _noun(subject: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(subject)}(e?s)?\b", re.I)


_LABELLING = _words("labelled", "labeled", "captioned", "titled", "tagged", "described as")


def name_matchers(claims: Sequence[Claim], drop: bool) -> list[Matcher]:
    """One test per unconfirmed alt-text name: does a piece name it (``drop``), or name it
    without a labelling word (module docstring)?"""
    matchers: list[Matcher] = []
    for c in claims:
        if is_unconfirmed_name(c):
            name = re.compile(rf"\b{re.escape(c.subject)}\b", re.I)
            if drop:
                matchers.append(lambda t, name=name: bool(name.search(t)))
            else:
                matchers.append(
                    lambda t, name=name: bool(name.search(t)) and not _LABELLING.search(t)
                )
    return matchers


def refuted_matchers(claims: Sequence[Claim]) -> list[Matcher]:
    """One test per refuted claim: does a piece of text state it? (module docstring)."""
    matchers: list[Matcher] = []
    for c in claims:
        if c.verdict != Verdict.REFUTED or not c.subject:
            continue
        noun = _noun(c.subject)
        if c.kind == ClaimKind.OBJECT:
            matchers.append(lambda t, noun=noun: bool(noun.search(t)))
        elif c.kind == ClaimKind.COUNT and c.count is not None:
            names = [str(c.count)] + [w for w, n in NUMBER_WORDS.items() if n == c.count]
            pattern = re.compile(
                rf"\b({'|'.join(map(re.escape, names))})\s+(\w+\s+){{0,2}}"
                rf"{re.escape(c.subject)}(e?s)?\b",
                re.I,
            )
            matchers.append(lambda t, p=pattern: bool(p.search(t)))
        elif c.kind == ClaimKind.ATTRIBUTE:
            own = set(content_words(c.text)) - set(content_words(c.subject))
            if own:
                attr = [_words(w) for w in sorted(own)]
                matchers.append(
                    lambda t, noun=noun, attr=attr: (
                        bool(noun.search(t)) and all(a.search(t) for a in attr)
                    )
                )
    return matchers


def drop_refuted(text: str, matchers: Sequence[Matcher], pieces: str = "sentences") -> str:
    """``text`` without the sentences (``pieces="phrases"``: comma phrases) that any matcher
    flags."""
    if not matchers:
        return text
    kept = [p for p in split_pieces(text, pieces) if not any(m(p) for m in matchers)]
    return (", " if pieces == "phrases" else " ").join(kept).strip()


def fallback_caption(work: Work, style: Style) -> str:
    """The documented fallback caption for ``style`` (see module docstring)."""
    banned = refuted_matchers(work.record.claims) + name_matchers(work.record.claims, drop=True)
    sentences: list[str] = []
    seen: set[str] = set()
    for proposal in work.record.proposals:
        if proposal.model == ALT_TEXT or not proposal.kept:
            continue
        for sentence in SENTENCE_BREAK.split(proposal.text.strip()):
            sentence = drop_refuted(sentence.strip(), banned)
            key = sentence.lower().rstrip(".")
            if sentence and key not in seen:
                seen.add(key)
                sentences.append(sentence)
    if not sentences:
        kept = [
            c.subject
            for c in work.record.claims
            if c.kind == ClaimKind.OBJECT and c.verdict != Verdict.REFUTED and c.subject
        ]
        sentences = [f"An image showing {', '.join(kept)}."] if kept else []
    if not sentences:
        return ""
    sentences = [s for s in (work.kind.clean_caption(s, "sentences") for s in sentences) if s]
    if style.pieces == "phrases":
        return ", ".join(s.rstrip(".") for s in sentences)
    if style.fallback == "first":
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
    styles_known: Mapping[str, Style] | None = None,
    alt_text: AltTextConfig | None = None,
) -> None:
    """Fill ``record.captions`` (style name → text) for the live items of ``batch``.

    ``styles`` name styles of ``styles_known`` (default: the shipped styles); with an
    ``instruction`` the instruction's style is added. ``alt_text`` decides what happens to
    unconfirmed alt-text names (module docstring; default: labelled)."""
    known = styles_known if styles_known is not None else shipped_styles()
    wanted = [known[name] for name in styles]
    if instruction:
        wanted.append(known[INSTRUCTION])
    if any(w.record.question for w in live(batch)):
        wanted.extend(known[name] for name in added_by(known, "question"))
    template = load_prompt("compose", prompts)
    alt_cfg = alt_text or AltTextConfig()
    drop: dict[int, bool] = {}  # per item, decided once: the verdicts no longer change
    for w in live(batch):
        unrelated = alt_text_unrelated(w)
        drop[id(w)] = unrelated or alt_cfg.unconfirmed_names == "drop"
        if unrelated:
            w.record.notes.append(
                "alt_text: objects it names were refuted and none supported, so it looks "
                "unrelated to the image; its names were left out"
            )
    for style in wanted:
        items = live(batch)
        if not items:
            return
        if style.added_by == "question":  # per item: only those with a question
            items = [w for w in items if w.record.question]
            if not items:
                continue
        conversations = [
            [
                {
                    "role": "user",
                    "content": render(
                        template,
                        **_facts(w, drop[id(w)]),
                        style=style_text(style, instruction, w.record.question.text)
                        + w.kind.compose_rule,
                    ),
                }
            ]
            for w in items
        ]
        answers = llm.chat(conversations, max_new_tokens=max_new_tokens, temperature=temperature)
        for w, answer in zip(items, answers, strict=True):
            w.record.captions[style.name] = _final_text(w, style, answer, drop[id(w)])


def _facts(work: Work, drop_names: bool) -> dict[str, str]:
    """The drafts and checked facts of the compose prompt (without the alt-text and its
    unconfirmed names when they are dropped)."""
    if not drop_names:
        return {"proposals": proposals_block(work), "verdicts": verdicts_block(work.record.claims)}
    hidden = [c for c in work.record.claims if is_unconfirmed_name(c)]
    return {
        "proposals": proposals_block(work, without={ALT_TEXT}),
        "verdicts": verdicts_block(work.record.claims, hidden),
    }


def _final_text(work: Work, style: Style, answer: str, drop_names: bool = False) -> str:
    written = work.kind.clean_caption(clean_caption(answer), style.pieces)
    fixed = fix_values(written, value_fixes(work.record.claims))
    if fixed != written:
        work.record.notes.append(
            f"captions.{style.name}: wrote the values the checks found where the LLM wrote others"
        )
        written = fixed
    text = drop_refuted(written, refuted_matchers(work.record.claims), style.pieces)
    if text != written and written:
        work.record.notes.append(
            f"captions.{style.name}: cut what the LLM wrote about refuted claims"
        )
    before = text
    text = drop_refuted(text, name_matchers(work.record.claims, drop_names), style.pieces)
    if text != before:
        work.record.notes.append(
            f"captions.{style.name}: cut unconfirmed alt-text names"
            + ("" if drop_names else " not given as labels")
        )
    usable = len(text) >= 3 and any(ch.isalpha() for ch in text)
    if usable:
        return text
    work.record.notes.append(
        f"captions.{style.name}: the LLM answer was "
        + ("left empty by those cuts" if written and text != written else "empty or unusable")
        + "; used the fallback caption built from the proposals"
    )
    return fallback_caption(work, style)
