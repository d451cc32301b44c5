"""CHAIR: how many of the objects a caption mentions are not in the image.

After Rohrbach et al. 2018, "Object Hallucination in Image Captioning" (EMNLP), following
their ``chair.py`` where the paper is silent.

**Mentions.** The caption is lower-cased and split into words; each word is singularised
(:func:`~factcap.text.english.singular`, unless the COCO table lists it as it is:
"scissors", "people"); then, left to right, the longest run of up to three words that names a
COCO category in CHAIR's synonym table (``text/data/coco_synonyms.txt``: 80 categories, e.g.
"puppy" → dog, "sofa" → couch, multi-word names such as "traffic light", "hot dog", "dining
table") is one *mention* of that category. Rohrbach et al.'s special cases are kept: "baby" /
"adult" before an animal and "passenger" before "jet" / "train" name the animal or vehicle,
not a person; "toilet seat" is a toilet, and "seat" next to "toilet" anywhere in the caption
is not a chair; "home plate" is nothing. Every occurrence counts ("a dog and another dog" is
two mentions). Known quirks of the table are kept for comparability ("orange" is the fruit).

**Ground truth** is ``Sample.objects`` mapped to categories the same way, plus (option
``include_references``, on by default, as in the paper) the categories mentioned in the
sample's reference captions.

**Values** (per caption): ``chair_s`` = 1 if any mention's category is not in the ground
truth, else 0; ``chair_i`` = hallucinated mentions / mentions (NaN when the caption mentions
no COCO object). Over a set (:meth:`Chair.corpus`): CHAIR-s = the mean of ``chair_s``,
CHAIR-i = all hallucinated mentions / all mentions — the paper's definitions. Lower is
better; both lie in [0, 1]. A sample without a ground-truth object list (``objects`` None —
an empty list means "nothing is there") gets NaN for both, with the reason.

**Open vocabulary** (``chair_ov_i``, not in the paper): no object list, and no COCO
vocabulary; the pipeline's own detector verdicts are the ground truth. The caption's objects
are the distinct object names of CAPTURE's rule extractor
(:func:`~factcap.metrics.capture.rule_elements`); each is matched to the ``object`` claims of
``Sample.claims`` by subject: the same name first, else the same head noun (last word) or the
same COCO category of the head ("puppy" ~ "dog"). A matched object is *hallucinated* when its
claims were ``refuted`` and none ``supported``; objects whose claims are all ``uncertain``,
or that no claim covers, are reported in ``info`` but left out of the ratio.
``chair_ov_i`` = hallucinated / (supported + hallucinated) objects; NaN, with the reason, when
there are no object claims or none of the caption's objects was decided. It is computed
whether or not ground truth exists.

>>> coco_mentions("Two puppies sleep on a sofa next to a hot dog.")
[('puppy', 'dog'), ('sofa', 'couch'), ('hot dog', 'hot dog')]
>>> chair_counts(coco_mentions("A dog on a couch."), {"dog"})
(2, ['couch'])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from factcap.metrics.base import NAN, Metric, Sample, Score
from factcap.metrics.capture import Lemmatizer, rule_elements
from factcap.text import synonyms as syn
from factcap.text.english import singular

_WORD = re.compile(r"[a-z]+")
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra")
_ANIMALS += ("giraffe", "animal", "cub")


@lru_cache(maxsize=1)
def _special() -> dict[str, str | None]:
    """Rohrbach et al.'s hard-coded phrases: phrase → the word it stands for (None: nothing)."""
    table: dict[str, str | None] = {"toilet seat": "toilet", "home plate": None}
    for animal in _ANIMALS:
        table[f"baby {animal}"] = animal
        table[f"adult {animal}"] = animal
    for vehicle in ("jet", "train"):
        table[f"passenger {vehicle}"] = vehicle
    return table


@lru_cache(maxsize=1)
def _vocabulary_words() -> frozenset[str]:
    words = {w for name in syn.coco_canonical() for w in name.split()}
    return frozenset(words | {w for phrase in _special() for w in phrase.split()})


def coco_mentions(text: str) -> list[tuple[str, str]]:
    """``(words, COCO category)`` for every COCO object mention in ``text``, in order.

    >>> coco_mentions("A baby elephant, two men and the toilet seat.")
    [('elephant', 'elephant'), ('man', 'person'), ('toilet', 'toilet')]
    """
    canonical = syn.coco_canonical()
    special = _special()
    known = _vocabulary_words()
    words = [w if w in known else singular(w) for w in _WORD.findall(text.lower())]
    mentions: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        for n in (3, 2, 1):
            if i + n > len(words):
                continue
            gram = " ".join(words[i : i + n])
            if gram in special:
                target = special[gram]
                if target is not None and target in canonical:
                    mentions.append((target, canonical[target]))
                i += n
                break
            if gram in canonical:
                mentions.append((gram, canonical[gram]))
                i += n
                break
        else:
            i += 1
    if "toilet" in words and "seat" in words:  # a toilet's seat is no chair
        mentions = [m for m in mentions if m[0] != "seat"]
    return mentions


def object_categories(objects: Iterable[str]) -> set[str]:
    """Ground-truth object names → COCO categories; a name that holds none stays as it is.

    >>> sorted(object_categories(["dining tables", "puppy", "lamp"]))
    ['dining table', 'dog', 'lamp']
    """
    out: set[str] = set()
    for name in objects:
        found = coco_mentions(name)
        if found:
            out.update(category for _, category in found)
        else:
            out.add(" ".join(name.lower().split()))
    return out


def chair_counts(mentions: Sequence[tuple[str, str]], truth: set[str]) -> tuple[int, list[str]]:
    """(number of mentions, the words of those whose category is not in ``truth``)."""
    return len(mentions), [word for word, category in mentions if category not in truth]


def _claim_subjects(claims: Iterable[Mapping[str, Any]], lem: Lemmatizer) -> list[tuple[str, str]]:
    """(normalised subject, verdict) of every object claim."""
    out = []
    for claim in claims:
        if not isinstance(claim, Mapping) or claim.get("kind") != "object":
            continue
        subject = " ".join(
            re.sub(r"[^a-z\- ]", " ", str(claim.get("subject") or "").lower()).split()
        )
        if subject:
            out.append((lem.noun(subject), str(claim.get("verdict") or "uncertain")))
    return out


def _head_category(phrase: str) -> str:
    head = phrase.split()[-1]
    return syn.coco_canonical().get(head, head)


def ov_verdicts(
    objects: Sequence[str],
    claims: Iterable[Mapping[str, Any]],
    lemmatizer: Lemmatizer | None = None,
) -> dict[str, str | None]:
    """Each caption object → ``supported``, ``refuted``, ``uncertain`` (claims matched) or None
    (no claim covers it), by the matching rules of the module docstring.

    >>> ov_verdicts(["red car", "puppy", "tree"], [
    ...     {"kind": "object", "subject": "car", "verdict": "supported"},
    ...     {"kind": "object", "subject": "dogs", "verdict": "refuted"}])
    {'red car': 'supported', 'puppy': 'refuted', 'tree': None}
    """
    lem = lemmatizer or Lemmatizer(None)
    subjects = _claim_subjects(claims, lem)
    out: dict[str, str | None] = {}
    for name in objects:
        matched = [v for s, v in subjects if s == name]
        if not matched:
            head, category = name.split()[-1], _head_category(name)
            matched = [
                v for s, v in subjects if s.split()[-1] == head or _head_category(s) == category
            ]
        if not matched:
            out[name] = None
        elif "supported" in matched:
            out[name] = "supported"
        elif "refuted" in matched:
            out[name] = "refuted"
        else:
            out[name] = "uncertain"
    return out


class Chair(Metric):
    """CHAIR-s / CHAIR-i against ground-truth objects, and the open-vocabulary CHAIR-i from
    the pipeline's detector verdicts (see the module docstring).

    Option: ``include_references`` (True): add the COCO objects the references mention to the
    ground truth, as Rohrbach et al. do.

    >>> s = Sample("1", "a.jpg", "final:short", "A dog on a sofa.", objects=["dog", "chair"])
    >>> Chair().score([s], None)[0].values
    {'chair_s': 1.0, 'chair_i': 0.5, 'chair_ov_i': nan}
    """

    name = "chair"
    value_names = ("chair_s", "chair_i", "chair_ov_i")
    needs = frozenset({"objects"})

    def __init__(self, *, include_references: bool = True):
        self.include_references = bool(include_references)
        self.lemmatizer = Lemmatizer(syn.wordnet())

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores: list[Score] = []
        for sample in samples:
            if not sample.caption or not sample.caption.strip():
                scores.append(Score.failed(self.value_names, "empty caption"))
                continue
            values: dict[str, float] = {}
            reasons: dict[str, str] = {}
            info: dict[str, Any] = {}
            if sample.objects is None:
                values["chair_s"] = values["chair_i"] = NAN
                reasons["chair_s, chair_i"] = "no ground-truth object list for this image"
            else:
                truth = object_categories(sample.objects)
                if self.include_references:
                    truth |= {c for ref in sample.references for _, c in coco_mentions(ref)}
                mentions = coco_mentions(sample.caption)
                n, hallucinated = chair_counts(mentions, truth)
                values["chair_s"] = 1.0 if hallucinated else 0.0
                values["chair_i"] = len(hallucinated) / n if n else NAN
                if not n:
                    reasons["chair_i"] = "the caption mentions no COCO object"
                info["chair_mentions"] = [list(m) for m in mentions]
                info["chair_hallucinated"] = hallucinated

            object_claims = [c for c in sample.claims if isinstance(c, Mapping)]
            if not any(c.get("kind") == "object" for c in object_claims):
                values["chair_ov_i"] = NAN
                reasons["chair_ov_i"] = "no object claims (detector verdicts) for this image"
            else:
                objects = rule_elements(sample.caption, self.lemmatizer).objects
                verdicts = ov_verdicts(objects, object_claims, self.lemmatizer)
                refuted = [o for o, v in verdicts.items() if v == "refuted"]
                supported = [o for o, v in verdicts.items() if v == "supported"]
                decided = len(refuted) + len(supported)
                values["chair_ov_i"] = len(refuted) / decided if decided else NAN
                if not decided:
                    reasons["chair_ov_i"] = "no object of the caption was decided by the detector"
                info["chair_ov"] = {
                    "supported": supported,
                    "hallucinated": refuted,
                    "uncertain": [o for o, v in verdicts.items() if v == "uncertain"],
                    "unchecked": [o for o, v in verdicts.items() if v is None],
                }
            failure = "; ".join(f"{k}: {r}" for k, r in reasons.items()) or None
            scores.append(
                Score({k: values[k] for k in self.value_names}, failure=failure, info=info)
            )
        return scores

    def corpus(self, samples: Sequence[Sample], scores: Sequence[Score]) -> dict[str, float]:
        """CHAIR-s (hallucinating captions / captions with ground truth), CHAIR-i (all
        hallucinated mentions / all mentions) and the open-vocabulary CHAIR-i likewise, each
        only where its denominator is positive."""
        out: dict[str, float] = {}
        judged = [s for s in scores if "chair_mentions" in s.info]
        if judged:
            out["chair_s"] = sum(1.0 for s in judged if s.info["chair_hallucinated"]) / len(judged)
        mentions = sum(len(s.info["chair_mentions"]) for s in judged)
        if mentions:
            out["chair_i"] = sum(len(s.info["chair_hallucinated"]) for s in judged) / mentions
        ov = [s.info["chair_ov"] for s in scores if "chair_ov" in s.info]
        decided = sum(len(o["supported"]) + len(o["hallucinated"]) for o in ov)
        if decided:
            out["chair_ov_i"] = sum(len(o["hallucinated"]) for o in ov) / decided
        return out
