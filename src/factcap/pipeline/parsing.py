"""Reading LLM answers, which are untrusted input, into claims.

An LLM may wrap its JSON in code fences, add prose around it, use single quotes or trailing
commas, stop mid-list, or answer something else entirely. :func:`extract_json` recovers what
it can and raises :class:`ParseError` otherwise (never anything else); :func:`to_claims` keeps
only well-formed claims. When both fail even after one repair retry, the pipeline falls back to
:func:`fallback_claims`: object (and count) claims from the noun phrases of the proposals.

>>> extract_json("Sure! ```json\\n[{'kind': 'object', 'text': 'a dog', },]\\n``` Hope it helps")
[{'kind': 'object', 'text': 'a dog'}]
>>> [c.subject for c in fallback_claims(["Two dogs play with a red ball."])]
['dog', 'red ball', 'dog']
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from factcap.schema import Claim


class ParseError(ValueError):
    """The answer holds no JSON value that could be recovered."""


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
                    "kind": {"type": "string", "enum": ["object", "attribute", "count", "text"]},
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


_FENCE = re.compile(r"```(?:json|JSON|javascript)?\s*(.*?)(?:```|$)", re.S)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_MAX_ANSWER_CHARS = 200_000


_MAX_STARTS = 50


def _scan(text: str) -> tuple[int, list[tuple[int, str]]]:
    """Bracket-scan ``text`` (which starts with ``[`` or ``{``), aware of quoted strings.

    Returns the index where the opening bracket closes (-1 if it never does) and, for every
    ``}`` met while still open, ``(index, closers needed after it)`` — the cut points of a
    truncated answer.
    """
    stack: list[str] = []
    in_string: str | None = None
    escaped = False
    cuts: list[tuple[int, str]] = []
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == in_string:
                in_string = None
            continue
        if ch in "\"'":
            in_string = ch
        elif ch in "[{":
            stack.append("]" if ch == "[" else "}")
        elif ch in "]}" and stack:
            stack.pop()
            if not stack:
                return i, cuts
            if ch == "}":
                cuts.append((i, "".join(reversed(stack))))
    return -1, cuts


def _candidates(text: str) -> Iterable[str]:
    """Substrings that may hold a JSON value, most likely first: fenced blocks, then every
    bracketed span (closed, or truncated and re-closed after its last complete object)."""
    for match in _FENCE.finditer(text):
        inner = match.group(1).strip()
        if inner:
            yield inner
    starts = [i for i, ch in enumerate(text) if ch in "[{"][:_MAX_STARTS]
    for start in starts:
        end, cuts = _scan(text[start:])
        if end >= 0:
            yield text[start : start + end + 1]
        elif cuts:
            cut, closers = cuts[-1]
            yield text[start : start + cut + 1] + closers


def _loads(text: str) -> Any:
    """Strict JSON, then JSON without trailing commas, then a Python literal (single quotes)."""
    cleaned = _TRAILING_COMMA.sub(r"\1", text.strip())
    for attempt in (text, cleaned):
        try:
            return json.loads(attempt)
        except (ValueError, RecursionError):
            pass
    pythonish = re.sub(r"\btrue\b", "True", cleaned)
    pythonish = re.sub(r"\bfalse\b", "False", pythonish)
    pythonish = re.sub(r"\bnull\b", "None", pythonish)
    try:
        value = ast.literal_eval(pythonish)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ParseError("not JSON") from None
    if not isinstance(value, (list, dict)):
        raise ParseError("not a JSON array or object")
    return value


def json_values(answer: str) -> Iterable[Any]:
    """Every JSON array or object that can be recovered from an LLM answer, in order."""
    if not isinstance(answer, str) or not answer.strip():
        return
    text = answer[:_MAX_ANSWER_CHARS]
    for candidate in _candidates(text):
        try:
            value = _loads(candidate)
        except ParseError:
            continue
        if isinstance(value, (list, dict)):
            yield value


def extract_json(answer: str) -> Any:
    """The first JSON array or object inside an LLM answer; :class:`ParseError` if none."""
    for value in json_values(answer):
        return value
    raise ParseError(f"no JSON array or object in the answer ({len(answer or '')} chars)")


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
            subject = _head_phrase(text)
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

NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "a pair of": 2,
    "several": None,
    "single": 1,
}
_DETERMINERS = {
    "a",
    "an",
    "the",
    "this",
    "that",
    "these",
    "those",
    "some",
    "its",
    "his",
    "her",
    "their",
    "my",
    "our",
    "another",
    "each",
    "every",
} | {w for w in NUMBER_WORDS if " " not in w}
_STOP = {
    "is",
    "are",
    "was",
    "were",
    "be",
    "being",
    "been",
    "and",
    "or",
    "but",
    "with",
    "on",
    "in",
    "at",
    "of",
    "to",
    "from",
    "by",
    "for",
    "near",
    "next",
    "under",
    "over",
    "above",
    "below",
    "behind",
    "beside",
    "while",
    "that",
    "which",
    "who",
    "as",
    "it",
    "there",
    "has",
    "have",
    "into",
    "onto",
    "front",
    "top",
    "side",
    "holding",
    "wearing",
    "sitting",
    "standing",
    "playing",
    "riding",
    "walking",
    "looking",
    "shows",
    "showing",
    "image",
    "photo",
    "picture",
    "view",
    "close",
    "up",
    "background",
    "foreground",
    "a",
    "an",
    "the",
    "its",
    "their",
    "his",
    "her",
    "this",
    "these",
    "those",
    "some",
    "very",
} | set(NUMBER_WORDS)
_VERBS = {
    "sit",
    "sits",
    "stand",
    "stands",
    "play",
    "plays",
    "lie",
    "lies",
    "run",
    "runs",
    "walk",
    "walks",
    "look",
    "looks",
    "eat",
    "eats",
    "hold",
    "holds",
    "wear",
    "wears",
    "ride",
    "rides",
    "fly",
    "flies",
    "sleep",
    "sleeps",
    "rest",
    "rests",
    "wait",
    "waits",
    "stare",
    "stares",
    "can",
    "could",
    "will",
    "would",
    "appears",
    "seems",
    "drive",
    "drives",
    "grow",
    "grows",
    "hang",
    "hangs",
    "say",
    "says",
    "read",
    "reads",
    "lean",
    "leans",
    "swim",
    "swims",
}
_WORD = re.compile(r"[a-z][a-z\-']*")


def _ends_phrase(word: str) -> bool:
    return (
        word in _STOP
        or word in _VERBS
        or word.endswith("ing")
        or (len(word) > 4 and word.endswith("ed"))
    )


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def noun_phrases(text: str) -> list[tuple[str, int | None]]:
    """``(phrase, count)`` for each determiner-led phrase: "two red cars" → ("red car", 2).

    A rule-based chunker with no model: the words after a determiner or number, up to the next
    function word, singularised; ``count`` is set when a number word led the phrase.
    """
    words = _WORD.findall(text.lower())
    phrases: list[tuple[str, int | None]] = []
    i = 0
    while i < len(words):
        if words[i] in _DETERMINERS:
            count = NUMBER_WORDS.get(words[i])
            j = i + 1
            chunk: list[str] = []
            while j < len(words) and not _ends_phrase(words[j]) and len(chunk) < 3:
                chunk.append(words[j])
                j += 1
                if count and count > 1 and chunk[-1] != _singular(chunk[-1]):
                    break  # "two dogs play": the plural noun closes the phrase
            if chunk:
                chunk[-1] = _singular(chunk[-1])
                phrases.append((" ".join(chunk), count))
            i = max(j, i + 1)
        else:
            i += 1
    return phrases


def _head_phrase(text: str) -> str:
    """The first noun phrase of a claim sentence, else its last content word."""
    phrases = noun_phrases(text)
    if phrases:
        return phrases[0][0]
    words = content_words(text)
    return _singular(words[-1]) if words else ""


def content_words(text: str) -> list[str]:
    """Words of three or more letters that are neither function words nor common verbs."""
    return [
        w
        for w in _WORD.findall(text.lower())
        if len(w) >= 3 and not _ends_phrase(w) and w not in _DETERMINERS
    ]


def fallback_claims(proposals: Sequence[str], max_claims: int = 32) -> list[Claim]:
    """Object claims (and count claims for number words) from the proposals' noun phrases.

    The documented fallback when the LLM's answer cannot be parsed even after one repair
    retry. Proposals in which the chunker finds no determiner-led phrase (terse or broken
    text) contribute their content words as single-word objects instead.
    """
    claims: list[Claim] = []
    seen: set[str] = set()
    counts: list[Claim] = []
    for text in proposals:
        phrases = noun_phrases(text) or [(_singular(w), None) for w in content_words(text)]
        for phrase, count in phrases:
            if phrase not in seen:
                seen.add(phrase)
                claims.append(Claim(kind="object", text=f"There is a {phrase}.", subject=phrase))
            if count is not None and count > 1:
                counts.append(
                    Claim(
                        kind="count",
                        text=f"There are {count} {phrase}s.",
                        subject=phrase,
                        question=f"Are there {count} {phrase}s in the image?",
                        count=count,
                    )
                )
    return (claims + counts)[:max_claims]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


def clean_text(text: str) -> str:
    """Model output made printable: control and replacement characters dropped, spaces folded.

    >>> clean_text("a\\x00 cat\\n on  a\\ufffd mat")
    'a cat on a mat'
    """
    return " ".join(_CONTROL.sub("", text).split())


def clean_caption(answer: str) -> str:
    """The caption inside a compose answer: no code fences, labels or wrapping quotes."""
    if not isinstance(answer, str):
        return ""
    text = answer.strip()
    fenced = _FENCE.search(text)
    if fenced and fenced.group(1).strip():
        text = fenced.group(1).strip()
    text = re.sub(r"^(final\s+)?(caption|alt[- ]?text|prompt|answer)\s*:\s*", "", text, flags=re.I)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return clean_text(text)
