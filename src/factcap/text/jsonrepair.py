"""JSON recovered from LLM answers, which are untrusted input.

An LLM may wrap its JSON in code fences, add prose around it, use single quotes, trailing
commas, comments or unquoted keys, stop mid-list, or answer something else entirely.
:func:`extract_json` recovers what it can and raises :class:`ParseError` otherwise (never
anything else); :func:`json_values` yields every value it can recover, in order.

Finding the JSON in the answer is done here: fenced blocks first, then every bracketed span,
a cut-off one closed after its last complete object. Repairing one such span is the
``json-repair`` library's (imported on the first answer that is not strict JSON). Its result
is kept only when it is the value the span opens (an object for ``{``, an array for ``[``) and
not empty, so that prose in braces ("see {below}") stays no value, as a hopeless answer stays
a :class:`ParseError`.

>>> extract_json("Sure! ```json\\n[{'kind': 'object', 'text': 'a dog', },]\\n``` Hope it helps")
[{'kind': 'object', 'text': 'a dog'}]
>>> extract_json('[{"a": 1}, {"a": 2}, {"a"')  # cut off: closed after the last whole object
[{'a': 1}, {'a': 2}]
>>> extract_json('Scores: {accuracy: 4, /* out of 5 */ "note": "a "red" car"}')
{'accuracy': 4, 'note': 'a "red" car'}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any


class ParseError(ValueError):
    """The answer holds no JSON value that could be recovered."""


_FENCE = re.compile(r"```(?:json|JSON|javascript)?\s*(.*?)(?:```|$)", re.S)
_OPENS: dict[str, type] = {"{": dict, "[": list}
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
    """Strict JSON, else json-repair's reading of ``text`` if it is the array or object that
    ``text`` opens, and not empty."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    from json_repair import loads as repair

    try:
        value = repair(text, skip_json_loads=True)
    except Exception:  # whatever the library may raise on hostile input
        raise ParseError("not JSON") from None
    if not value or not isinstance(value, _OPENS.get(text.lstrip()[:1], ())):
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


def fenced(text: str) -> str:
    """What the first code fence of ``text`` holds, stripped; "" when there is none (or the
    first is empty).

    >>> fenced("Here:\\n```json\\n[1]\\n```"), fenced("no fence")
    ('[1]', '')
    """
    match = _FENCE.search(text)
    return match.group(1).strip() if match else ""
