"""Reading LLM answers, which are untrusted input, into claims.

The JSON is recovered with :mod:`factcap.text.jsonrepair` (code fences, prose around it,
single quotes, trailing commas, a list cut off mid-way); :func:`to_claims` keeps only
well-formed claims, and :func:`parse_claims` raises :class:`~factcap.text.jsonrepair.ParseError`
when none is left. When that fails even after one repair retry, the pipeline falls back to
:func:`fallback_claims`: object (and count) claims from the noun phrases of the proposals
(:func:`factcap.text.chunk.noun_phrases`).

>>> [c.subject for c in parse_claims("Sure! ```json\\n[{'kind': 'object', 'text': 'a dog'},]```")]
['dog']
>>> [c.subject for c in fallback_claims(["Two dogs play with a red ball."])]
['dog', 'red ball', 'dog']
>>> fallback_claims(["two ties on a rack"])[-1].question
'Are there 2 ties in the image?'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from factcap.schema import CLAIM_KINDS, Claim
from factcap.text.chunk import head_phrase, noun_phrases
from factcap.text.english import NUMBER_WORDS, clean_text, plural
from factcap.text.jsonrepair import ParseError, fenced, json_values

# What the claim-extraction answer should look like, for LLMs that can be held to a JSON
# schema (structured output). OpenAI's strict mode wants an object at the top, every key
# required and no others; :func:`to_claims` reads this shape as well as a bare list.
CLAIMS_JSON_SCHEMA: dict[str, Any] = {
    "title": "claims",
    "type": "object",
    "properties": {
        "claims": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": list(CLAIM_KINDS)},
                    "text": {"type": "string"},
                    "subject": {"type": "string"},
                    "question": {"type": "string"},
                    "count": {"type": ["integer", "null"]},
                },
                "required": ["kind", "text", "subject", "question", "count"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["claims"],
    "additionalProperties": False,
}


_KIND_ALIASES = {
    "object": "object",
    "objects": "object",
    "entity": "object",
    "existence": "object",
    "attribute": "attribute",
    "attributes": "attribute",
    "color": "attribute",
    "colour": "attribute",
    "action": "attribute",
    "relation": "attribute",
    "position": "attribute",
    "spatial": "attribute",
    "count": "count",
    "counting": "count",
    "number": "count",
    "quantity": "count",
    "text": "text",
    "ocr": "text",
    "words": "text",
    "name": "name",
    "names": "name",
    "named entity": "name",
    "named_entity": "name",
    "proper name": "name",
    "proper noun": "name",
    "knowledge": "name",
    "brand": "name",
    "place": "name",
    "location": "name",
    "date": "name",
}


def _as_count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 1000 else None
    if isinstance(value, float) and value.is_integer():
        return _as_count(int(value))
    if isinstance(value, str):
        value = value.strip().lower()
        if value.isdigit():
            return _as_count(int(value))
        return NUMBER_WORDS.get(value)
    return None


def _clean(value: Any, limit: int = 300) -> str:
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""


def to_claims(value: Any, max_claims: int = 32) -> list[Claim]:
    """Well-formed claims from parsed JSON: a list, or an object with a ``claims`` list.

    Elements that are not objects, lack a known kind or any text, or are repeats, are dropped.
    """
    if isinstance(value, dict):
        value = value.get("claims", value.get("facts", [value]))
    if not isinstance(value, list):
        return []
    claims: list[Claim] = []
    seen: set[tuple[str, str]] = set()
    for item in value:
        if not isinstance(item, dict):
            continue
        kind = _KIND_ALIASES.get(_clean(item.get("kind") or item.get("type")).lower())
        text = _clean(item.get("text") or item.get("claim"))
        subject = _clean(item.get("subject") or item.get("object"), 80).lower()
        if not kind or not (text or subject):
            continue
        text = text or subject
        if not subject and kind in ("object", "count"):
            subject = head_phrase(text)
            if not subject:
                continue
        count = _as_count(item.get("count"))
        if kind == "count" and count is None:
            continue
        key = (kind, text.lower())
        if key in seen:
            continue
        seen.add(key)
        claims.append(
            Claim(
                kind=kind,
                text=text,
                subject=subject,
                question=_clean(item.get("question")),
                count=count if kind == "count" else None,
            )
        )
        if len(claims) >= max_claims:
            break
    return claims


def parse_claims(answer: str, max_claims: int = 32) -> list[Claim]:
    """Claims from an LLM answer; raises :class:`ParseError` when none can be recovered."""
    found_json = False
    for value in json_values(answer):
        found_json = True
        claims = to_claims(value, max_claims)
        if claims:
            return claims
    if found_json:
        raise ParseError("the answer parsed, but held no well-formed claim")
    raise ParseError(f"no JSON array or object in the answer ({len(answer or '')} chars)")


# --- fallback: noun phrases straight from the proposals ------------------------------------


def fallback_claims(proposals: Sequence[str], max_claims: int = 32) -> list[Claim]:
    """Object claims, then count claims, from the noun phrases of the proposals.

    The documented fallback when the LLM's answer cannot be parsed even after one repair
    retry; the phrases are :func:`factcap.text.chunk.noun_phrases`' (no preposition, pronoun,
    number word or lone adjective is ever a subject). One object claim per subject, and one
    count claim per subject that some proposal counts above one: when proposals disagree, the
    count most of them give (the first of those tied).

    >>> [(c.subject, c.count) for c in fallback_claims(["two ties", "Two ties hang."])]
    [('tie', None), ('tie', 2)]
    >>> [c.count for c in fallback_claims(["2 cats", "3 cats", "three cats"]) if c.count]
    [3]
    """
    objects: dict[str, Claim] = {}
    counted: dict[str, list[int]] = {}
    for text in proposals:
        for phrase, count in noun_phrases(text):
            if phrase not in objects:
                objects[phrase] = Claim(kind="object", text=f"There is a {phrase}.", subject=phrase)
            if count is not None and count > 1:
                counted.setdefault(phrase, []).append(count)
    counts = []
    for phrase, seen in counted.items():
        count = max(seen, key=lambda n: (seen.count(n), -seen.index(n)))
        many = plural(phrase)
        counts.append(
            Claim(
                kind="count",
                text=f"There are {count} {many}.",
                subject=phrase,
                question=f"Are there {count} {many} in the image?",
                count=count,
            )
        )
    return ([*objects.values()] + counts)[:max_claims]


def clean_caption(answer: str) -> str:
    """The caption inside a compose answer: no code fences, labels or wrapping quotes."""
    if not isinstance(answer, str):
        return ""
    text = answer.strip()
    text = fenced(text) or text
    text = re.sub(r"^(final\s+)?(caption|alt[- ]?text|prompt|answer)\s*:\s*", "", text, flags=re.I)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return clean_text(text)
