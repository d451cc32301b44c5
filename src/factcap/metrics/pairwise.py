"""Pairwise caption comparison by a VLM judge (``factcap evaluate --pairwise A,B``).

For every image that has a caption from both sources, the ``judge`` role is asked which
caption describes the image better, twice: source A's caption shown first (as "A"), then
source B's shown first. Each answer ("A", "B" or "tie"; JSON or prose, parsed tolerantly by
:func:`parse_preference`) is mapped back to a source. Both orders naming the same source:
that source wins the pair; the two orders disagreeing (position bias), or naming a tie: a
tie; an answer with no usable preference: the pair failed, with the reason, and counts in
``n_failed`` only. The summary (:func:`summarise_pairs`) gives win / tie / loss counts and
rates from source A's side over the ``n`` compared pairs, and the position-consistency rate:
the share of pairs whose two answers agree (the same source, or both a tie).

A judge that always prefers the first caption shown makes every pair a tie, with
consistency 0:

>>> outcome("final:a", "final:b", "A", "A")
{'answers': ['final:a', 'final:b'], 'winner': 'tie', 'consistent': False}
>>> summarise_pairs([{"a": "x", "b": "y", **outcome("x", "y", "A", "B")}])["x vs y"]["wins"]
1
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from factcap.metrics.base import Sample
from factcap.metrics.vlm_judge import find_reason, judge_image
from factcap.prompts import load_prompt, quote_data, render
from factcap.text.jsonrepair import json_values

TIE = "tie"
_TIE_WORDS = re.compile(r"\b(tie|tied|same|equal|equally|neither|both)\b", re.I)
_KEYS = ("better", "winner", "answer", "choice", "preferred", "preference", "best")
_KEYWORD = re.compile(
    r"(?i:\b(?:better|winner|answer|choice|preferred|preference|prefer)\b[\s*\"':=\-]*"
    r"(?:is\s+)?(?:caption\s+)?)[\"'*]*([AB])\b"
)
_IS_BETTER = re.compile(
    r"\b(?:[Cc]aption\s+)?([AB])\b[\"'*]*\s+(?:is|was)\s+(?:the\s+)?(?:better|more|preferred)"
)


def _choice(word: str) -> str | None:
    """ "A", "B" or tie from a short answer (``"Caption B."``, ``"tie"``); None otherwise."""
    text = word.strip().strip(".,!:;\"'*`()[] ").lower()
    text = text.removeprefix("caption").strip()
    if text in ("a", "b"):
        return text.upper()
    return TIE if _TIE_WORDS.fullmatch(text) else None


def parse_preference(answer: str) -> str | None:
    """The judge's preference in ``answer``: ``"A"``, ``"B"`` or ``"tie"``; None when it
    gives none (JSON ``{"better": "B"}``, a bare ``B``, ``Caption A is better``, ``Answer:
    A``, or a tie word).

    >>> [parse_preference(a) for a in ['{"better": "B", "reason": "..."}', "A.", "Both equal."]]
    ['B', 'A', 'tie']
    >>> parse_preference("I like the colours.") is None
    True
    """
    whole = _choice(answer)
    if whole is not None:
        return whole
    for value in json_values(answer):
        if isinstance(value, dict):
            keys = {str(k).lower(): v for k, v in value.items()}
            for key in _KEYS:
                if isinstance(keys.get(key), str) and _choice(keys[key]) is not None:
                    return _choice(keys[key])
            break
    for pattern in (_KEYWORD, _IS_BETTER):
        match = pattern.search(answer)
        if match:
            return match.group(1)
    return TIE if _TIE_WORDS.search(answer) else None


def outcome(source_a: str, source_b: str, first: str, second: str) -> dict[str, Any]:
    """One pair's result from its two answers: ``first`` asked with A's caption shown as
    "A", ``second`` with B's caption shown as "A". ``answers`` are the sources they name
    (or ``tie``); ``winner`` a source, or ``tie``; ``consistent``: both answers agree."""
    shown = ({"A": source_a, "B": source_b}, {"A": source_b, "B": source_a})
    named = [order.get(choice, TIE) for order, choice in zip(shown, (first, second), strict=True)]
    winner = named[0] if named[0] == named[1] else TIE
    return {"answers": named, "winner": winner, "consistent": named[0] == named[1]}


def pair_prompt(first: str, second: str, template: str | None = None) -> str:
    """The pairwise prompt with ``first`` shown as caption A and ``second`` as caption B."""
    text = template if template is not None else load_prompt("judge_pairwise")
    return render(text, captions=quote_data([first, second], ["A", "B"], "caption {}"))


def compare(
    samples: Sequence[Sample],
    source_a: str,
    source_b: str,
    resources: Any,
    max_new_tokens: int = 96,
    template: str | None = None,
) -> list[dict[str, Any]]:
    """One row per image that has a caption from both sources (in the order of ``samples``):
    ``{"id", "a", "b", "answers", "winner", "consistent", "reasons"}``, or with ``failure``
    (and ``winner`` None) when the image could not be read or an answer held no preference.
    The judge is ``resources.get("judge")``; its calls are batched."""
    a = {s.id: s for s in samples if s.caption_source == source_a}
    b = {s.id: s for s in samples if s.caption_source == source_b}
    rows: list[dict[str, Any]] = []
    asks: list[tuple[int, Any, str]] = []
    for image_id, sample in a.items():
        if image_id not in b:
            continue
        row: dict[str, Any] = {"id": image_id, "a": source_a, "b": source_b}
        rows.append(row)
        if hasattr(resources, "add_media"):
            resources.add_media(sample.source, sample.media, sample.view_size)
        seen = judge_image(resources, sample)
        if isinstance(seen, str):
            row.update(winner=None, consistent=None, failure=seen)
            continue
        image, note = seen
        first, second = sample.caption, b[image_id].caption
        asks.append((len(rows) - 1, image, note + pair_prompt(first, second, template)))
        asks.append((len(rows) - 1, image, note + pair_prompt(second, first, template)))
    answers: dict[int, list[str]] = {}
    grader = resources.get("judge") if asks else None
    step = max(2, resources.batch_size - resources.batch_size % 2)  # both orders together
    for start in range(0, len(asks), step):
        chunk = asks[start : start + step]
        try:
            out = grader.generate(
                [im for _, im, _ in chunk], [p for _, _, p in chunk], max_new_tokens
            )
            texts = [g.text for g in out]
        except Exception as err:  # a judge that failed: these pairs say why
            reason = f"the judge failed: {type(err).__name__}: {err}"[:500]
            for i, _, _ in chunk:
                rows[i].update(winner=None, consistent=None, failure=reason)
            continue
        for (i, _, _), text in zip(chunk, texts, strict=True):
            answers.setdefault(i, []).append(text)
    for i, texts in answers.items():
        row = rows[i]
        if "failure" in row:
            continue
        choices = [parse_preference(t) for t in texts]
        if None in choices:
            bad = texts[choices.index(None)]
            snippet = " ".join(bad.split())[:200]
            row.update(
                winner=None,
                consistent=None,
                failure=f"no preference (A, B or tie) in the judge's answer: {snippet!r}",
            )
            continue
        row.update(outcome(source_a, source_b, *choices))
        row["reasons"] = [find_reason(t) for t in texts]
    return rows


def summarise_pairs(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per source pair (``"A vs B"``): ``a``, ``b``, ``n`` (compared), ``n_failed``,
    ``wins`` / ``ties`` / ``losses`` (from A's side) and their rates over ``n``, and
    ``position_consistency`` (the share of the ``n`` pairs whose two answers agree); rates
    are NaN when ``n`` is 0."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['a']} vs {row['b']}"
        stats = out.setdefault(
            key,
            {"a": row["a"], "b": row["b"], "n": 0, "n_failed": 0, "wins": 0, "ties": 0,
             "losses": 0, "consistent": 0},
        )  # fmt: skip
        winner = row.get("winner")
        if winner is None:
            stats["n_failed"] += 1
            continue
        stats["n"] += 1
        stats["consistent"] += bool(row.get("consistent"))
        kind = "wins" if winner == row["a"] else "losses" if winner == row["b"] else "ties"
        stats[kind] += 1
    for stats in out.values():
        n = stats["n"]
        for kind, rate in (("wins", "win_rate"), ("ties", "tie_rate"), ("losses", "loss_rate")):
            stats[rate] = stats[kind] / n if n else math.nan
        consistent = stats.pop("consistent")
        stats["position_consistency"] = consistent / n if n else math.nan
    return out


def pairwise_table(summary: dict[str, dict[str, Any]]) -> str:
    """The pair summaries as a fixed-width table (counts, with rates in parentheses).

    >>> print(pairwise_table(summarise_pairs([{"a": "x", "b": "y", **outcome("x", "y", "A", "A")}])))
    pair    n  failed  win (A)  tie       loss (A)  consistent
    ----------------------------------------------------------
    x vs y  1  0       0 (0%)   1 (100%)  0 (0%)    0%
    """

    def cell(count: int, rate: float) -> str:
        return f"{count} ({rate:.0%})" if math.isfinite(rate) else f"{count} (n/a)"

    header = ["pair", "n", "failed", "win (A)", "tie", "loss (A)", "consistent"]
    body = [
        [
            key,
            str(s["n"]),
            str(s["n_failed"]),
            cell(s["wins"], s["win_rate"]),
            cell(s["ties"], s["tie_rate"]),
            cell(s["losses"], s["loss_rate"]),
            f"{s['position_consistency']:.0%}"
            if math.isfinite(s["position_consistency"])
            else "n/a",
        ]
        for key, s in summary.items()
    ]
    widths = [max(len(r[c]) for r in [header, *body]) for c in range(len(header))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *body]
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)
