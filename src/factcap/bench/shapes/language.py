"""The shapes world's language: captions, the captioners' known mistakes, claims and mentions.

Captions say one sentence per kind of object, left to right — ``There is a small red
circle. There are two large blue squares.`` — which is also the form the world's LLM is taught
to write final captions in. :func:`mentions` reads any caption in the world's vocabulary back
into structured mentions, which :mod:`.scoring` compares with the ground truth.

>>> from factcap.bench.shapes.world import make_scene
>>> scene = make_scene(3, seed=0)
>>> caption(scene)
'There are two large blue triangles. There is a large orange cross.'
>>> sum(m.count for m in mentions(caption(scene))) == len(scene.objects)
True
>>> mentions("There are two large blue squares.")
[Mention(count=2, size='large', colour='blue', shape='square')]
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from factcap.bench.shapes.world import COLOURS, SHAPES, SIZES, Scene

NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four"}
_NUMBER_VALUES = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
Kind = tuple[str, str, str]  # (size, colour, shape)


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x")) else "s")


def indefinite(word: str) -> str:
    """``a`` or ``an`` before ``word``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def phrase(kind: Kind, count: int = 1, article: bool = True) -> str:
    """``a small red circle`` / ``two large blue squares`` (``small red circle`` without article)."""
    size, colour, shape = kind
    words = [w for w in (size, colour) if w]
    if count == 1:
        return " ".join(
            ([indefinite(words[0] if words else shape)] if article else []) + words + [shape]
        )
    return " ".join([NUMBERS.get(count, str(count)), *words, plural(shape)])


def sentence(kind: Kind, count: int) -> str:
    verb = "There is" if count == 1 else "There are"
    return f"{verb} {phrase(kind, count)}."


def caption_of(groups: Sequence[tuple[Kind, int]]) -> str:
    """The world's caption form: one sentence per ``(kind, count)``."""
    return " ".join(sentence(kind, count) for kind, count in groups)


def caption(scene: Scene) -> str:
    """The true caption of a scene, in the world's caption form."""
    return caption_of(scene.groups())


def references(scene: Scene) -> list[str]:
    """Several true captions of a scene in different templates (for CLIP and references)."""
    groups = scene.groups()
    listed = [phrase(kind, n) for kind, n in groups]
    joined = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
    n = len(scene.objects)
    refs = [
        caption_of(groups),
        joined[0].upper() + joined[1:] + ".",
        f"{NUMBERS[n].capitalize()} {'shape' if n == 1 else 'shapes'} on a grey background: "
        f"{joined}.",
    ]
    relations = scene.relations()
    if relations:
        i, rel, j = relations[0]
        a, b = scene.objects[i], scene.objects[j]
        where = {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)
        refs.append(f"{phrase(a.kind).capitalize()} {where} {phrase(b.kind)}.")
    return refs


@dataclass(frozen=True)
class Noise:
    """A captioner's known failure modes, as probabilities per caption or per object kind:
    ``insert`` adds one object that is not in the scene, ``colour`` gives a kind a wrong
    colour, ``drop`` leaves a kind out (never all of them)."""

    insert: float = 0.0
    colour: float = 0.0
    drop: float = 0.0


# The benchmark's two captioners: directory name -> the failure mode each is taught.
CAPTIONERS: dict[str, Noise] = {
    "captioner_insertion": Noise(insert=0.3, drop=0.1),
    "captioner_colour": Noise(colour=0.3, drop=0.1),
}


def noisy_groups(scene: Scene, noise: Noise, rng: random.Random) -> list[tuple[Kind, int]]:
    """The scene's groups with ``noise`` applied: what a captioner trained on it learns to say."""
    groups = list(scene.groups())
    kept = [g for g in groups if rng.random() >= noise.drop] or [rng.choice(groups)]
    out: list[tuple[Kind, int]] = []
    for (size, colour, shape), count in kept:
        if rng.random() < noise.colour:
            colour = rng.choice([c for c in COLOURS if c != colour])
        out.append(((size, colour, shape), count))
    if rng.random() < noise.insert:
        absent = [s for s in SHAPES if scene.count(s) == 0]
        if absent:
            kind = (rng.choice(list(SIZES)), rng.choice(list(COLOURS)), rng.choice(absent))
            out.insert(rng.randint(0, len(out)), (kind, 1))
    return out


def noisy_caption(scene: Scene, noise: Noise, rng: random.Random) -> str:
    return caption_of(noisy_groups(scene, noise, rng))


# --- reading captions back ----------------------------------------------------------------------


@dataclass(frozen=True)
class Mention:
    """One object phrase of a caption; ``None`` where the caption does not say."""

    count: int | None
    size: str | None
    colour: str | None
    shape: str


def _alternatives(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_SHAPE_FORMS = {plural(s): s for s in SHAPES} | {s: s for s in SHAPES}
_MENTION = re.compile(
    rf"\b(?:(?P<count>{_alternatives(_NUMBER_VALUES)}|\d+)\s+)?"
    rf"(?:(?P<size>{_alternatives(SIZES)})\s+)?"
    rf"(?:(?P<colour>{_alternatives(COLOURS)})\s+)?"
    rf"(?P<shape>{_alternatives(_SHAPE_FORMS)})\b",
    re.IGNORECASE,
)


def mentions(text: str) -> list[Mention]:
    """Every object phrase in ``text`` (the world's vocabulary, any template)."""
    found = []
    for m in _MENTION.finditer(text):
        count = m.group("count")
        value = None
        if count:
            value = int(count) if count.isdigit() else _NUMBER_VALUES[count.lower()]
        found.append(
            Mention(
                count=value,
                size=(m.group("size") or "").lower() or None,
                colour=(m.group("colour") or "").lower() or None,
                shape=_SHAPE_FORMS[m.group("shape").lower()],
            )
        )
    return found


# --- the two text tasks of the pipeline's LLM ----------------------------------------------------


def claims_for(captions: Sequence[str]) -> list[dict[str, Any]]:
    """The claims the pipeline's LLM should extract from ``captions``, in the claims prompt's
    JSON form: per object (``colour shape``) one ``object`` claim, one ``attribute`` claim per
    size said, one ``count`` claim per number above one said; in order of first mention.

    >>> [c["kind"] for c in claims_for(["There are two small red circles."])]
    ['object', 'attribute', 'count']
    """
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for text in captions:
        for m in mentions(text):
            subject = f"{m.colour} {m.shape}" if m.colour else m.shape
            claims = by_subject.setdefault(
                subject,
                [
                    {
                        "kind": "object",
                        "text": f"There is {indefinite(subject)} {subject}.",
                        "subject": subject,
                    }
                ],
            )
            if m.size:
                claims.append(
                    {
                        "kind": "attribute",
                        "text": f"The {subject} is {m.size}.",
                        "subject": subject,
                        "question": f"Is the {subject} {m.size}?",
                    }
                )
            if m.count and m.count > 1:
                number = NUMBERS.get(m.count, str(m.count))
                words = f"{number} {subject.rsplit(' ', 1)[0] + ' ' if ' ' in subject else ''}"
                noun = plural(m.shape)
                claims.append(
                    {
                        "kind": "count",
                        "text": f"There are {words}{noun}.",
                        "subject": subject,
                        "question": f"Are there {words}{noun}?",
                        "count": m.count,
                    }
                )
    out: list[dict[str, Any]] = []
    for claims in by_subject.values():
        seen: set[str] = set()
        for claim in claims:
            if claim["text"] not in seen:
                seen.add(claim["text"])
                out.append(claim)
    return out


def claims_answer(captions: Sequence[str]) -> str:
    """:func:`claims_for` as the JSON text the LLM is taught to answer."""
    return json.dumps(claims_for(captions), ensure_ascii=False)


def compose_answer(
    claims: Sequence[dict[str, Any]], verdicts: Sequence[str], drafts: Sequence[str] = ()
) -> str:
    """The final caption the LLM is taught to write from checked claims: every object whose
    ``object`` claim is supported, with its first size and number that are not refuted.

    An ``uncertain`` object (the checkers disagreed) is kept only when it is plausible, as the
    compose prompt asks: when every one of the ``drafts`` names it. When every claim is
    uncertain, nothing was checked (verification off) and every object is kept.

    >>> drafts = ["There are two small red circles. There is a large blue cross."]
    >>> claims = claims_for(drafts)
    >>> compose_answer(claims, ["supported", "supported", "refuted", "refuted", "supported"])
    'There is a small red circle.'
    >>> compose_answer(claims, ["supported"] * 3 + ["uncertain"] * 2, [*drafts, "a red circle"])
    'There are two small red circles.'
    """
    unchecked = all(verdict == "uncertain" for verdict in verdicts)

    def kept(subject: str, verdict: str) -> bool:
        if verdict == "supported" or unchecked:
            return True
        return verdict == "uncertain" and all(
            any(f"{m.colour} {m.shape}" == subject for m in mentions(draft)) for draft in drafts
        )

    objects: dict[str, dict[str, Any]] = {}
    for claim, verdict in zip(claims, verdicts, strict=True):
        subject = claim["subject"]
        if claim["kind"] == "object" and kept(subject, verdict):
            objects.setdefault(subject, {"size": "", "count": 1, "counted": False})
    for claim, verdict in zip(claims, verdicts, strict=True):
        entry = objects.get(claim["subject"])
        if entry is None or verdict == "refuted":
            continue
        if claim["kind"] == "attribute" and not entry["size"]:
            entry["size"] = claim["text"].rstrip(".").rsplit(" ", 1)[-1]
        elif claim["kind"] == "count" and not entry["counted"]:
            entry["count"], entry["counted"] = claim["count"], True
    groups = []
    for subject, entry in objects.items():
        colour, _, shape = subject.rpartition(" ")
        groups.append(((entry["size"], colour, shape), entry["count"]))
    return caption_of(groups)
