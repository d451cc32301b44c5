"""CAPTURE: how many of the references' details a caption gets, and how many it adds.

After Dong et al. 2024, "Benchmarking and Improving Detail Image Caption", following its
reference implementation where the paper is silent: objects, attributes and relations are
extracted from the caption and from each reference (by the ``llm`` role, or offline by
:func:`rule_elements`), matched exact → synonym → soft, and scored as F1 weighted 5:5:2.

README: "Evaluate captions" → "CAPTURE" (the elements, both extractors, the three matching
stages, the scores).

>>> round(weighted_total(1.0, 0.5, 0.0), 4)  # (0.5·1 + 0.5·0.5 + 0.2·0) / 1.2
0.625
>>> e = rule_elements("A black cat sits on a red sofa.", lemmatizer=None)
>>> e.objects, e.attributes, e.relations
(('cat', 'sofa'), (('cat', 'black'), ('sofa', 'red')), (('cat', 'sits on', 'sofa'),))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from factcap.errors import ConfigError
from factcap.metrics.base import Metric, Sample, Score
from factcap.text import synonyms as syn
from factcap.text.english import NUMBER_WORDS, content_words, singular
from factcap.text.jsonrepair import ParseError, extract_json

#: CAPTURE's weights of the object, attribute and relation F1 (its alpha, beta, gamma).
WEIGHTS = (0.5, 0.5, 0.2)

# --- the elements ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Elements:
    """What one caption says: objects, ``(object, attribute)`` pairs and
    ``(subject, relation, object)`` triples, each sorted and without repeats."""

    objects: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    relations: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def of(cls, objects: Any = (), attributes: Any = (), relations: Any = ()) -> Elements:
        return cls(
            tuple(sorted(set(objects))),
            tuple(sorted(set(attributes))),
            tuple(sorted(set(relations))),
        )

    def attribute_words(self) -> list[str]:
        """The attributes pooled over objects, as CAPTURE matches them (a word describing two
        objects counts twice)."""
        return sorted(attr for _, attr in self.attributes)

    def counts(self) -> dict[str, int]:
        return {
            "objects": len(self.objects),
            "attributes": len(self.attributes),
            "relations": len(self.relations),
        }


#: Generic nouns that name no thing in the picture; dropped from the objects.
STOP_OBJECTS = frozenset(
    """image photo photograph picture scene view background foreground backdrop setting
    atmosphere ambiance mood vibe feel sense moment time day night life world nature
    area space part side top bottom front back middle center centre left right edge corner
    element detail object item thing stuff something everything someone somebody anyone
    color colour hue tone shade shape pattern texture style design composition layout
    frame focus angle perspective viewpoint vantage distance direction position location
    place spot point surroundings environment landscape scenery view setting context
    presence appearance expression attention activity action motion movement energy
    interaction beauty charm warmth tranquility serenity simplicity elegance feeling
    illustration depiction representation snapshot shot capture glimpse sight display
    variety number lot group kind type sort bit piece amount couple pair row series
    one other others each both all""".split()
)

#: Describing words the rules treat as attributes even when WordNet also lists them as nouns
#: (colours, sizes, shapes, materials, ages, states, patterns).
ATTRIBUTE_WORDS = frozenset(
    """red orange yellow green blue purple violet pink brown black white gray grey silver
    gold golden beige tan cream ivory maroon navy teal turquoise cyan magenta crimson
    dark light bright pale pastel colorful colourful multicolored vibrant neon transparent
    small large big tiny huge little tall short long wide narrow thick thin giant massive
    round square rectangular circular triangular oval flat curved straight pointed
    wooden metallic plastic leather ceramic woolen woven knitted
    old new young modern ancient vintage antique elderly
    empty full open closed wet dry clean dirty broken fresh ripe rotten frozen hot cold warm
    busy crowded clear cloudy sunny snowy rainy foggy shiny glossy matte fluffy furry hairy
    soft hard smooth rough sharp calm quiet happy sad smiling cute beautiful pretty ugly
    striped spotted checkered plaid floral dotted patterned plain lush dense sparse
    wild domestic male female heavy lit illuminated blurry blurred distant nearby
    """.split()
)

_DETERMINERS = frozenset(
    """a an the this that these those some its his her their my our your another each every
    several many few both all any no other various different numerous multiple""".split()
) | frozenset(w for w in NUMBER_WORDS if " " not in w)
_AUX = frozenset(
    "is are was were be been being am do does did can could will would may might".split()
)
_LINKING = frozenset("is are was were looks look appears appear seems seem remains stays".split())
_CONJ = frozenset("and or but while which who whom whose where when that as , ; 's".split())
_PREPOSITIONS = frozenset(
    """on in at of with near under over above below behind beside besides by from into onto
    next to front top across along around against between among through toward towards
    inside outside beneath underneath atop past up down within without like for upon off
    via amid amidst beyond alongside""".split()
)
_DEGREE = frozenset("very quite rather slightly somewhat really fairly mostly partly".split())
# content words that are no nouns: never the start or part of a phrase
_NOT_NOUNS = frozenset(
    "together away alone also too here nearby outdoors indoors ahead apart again else".split()
)
_TOKEN = re.compile(r"[a-z][a-z\-]*(?:'s)?|\d+|,")
_SENTENCE = re.compile(r"[.!?;:\n]+")
_MAX_PHRASE = 4
_MAX_GAP = 5


class Lemmatizer:
    """Base forms of nouns, adjectives and verbs: WordNet's morphy when a :class:`WordNet` is
    given, else :func:`~factcap.text.english.singular` for nouns and the word as is.

    >>> Lemmatizer(None).noun("ponies"), Lemmatizer(None).verb("sitting")
    ('pony', 'sitting')
    """

    def __init__(self, wordnet: syn.WordNet | None):
        self.wordnet = wordnet

    def noun(self, phrase: str) -> str:
        words = phrase.split()
        if not words:
            return ""
        if self.wordnet is not None and len(words) > 1 and self.wordnet.has(phrase, "n"):
            return self.wordnet.lemma(phrase, "n")
        last = self.wordnet.lemma(words[-1], "n") if self.wordnet else singular(words[-1])
        return " ".join(words[:-1] + [last])

    def adjective(self, word: str) -> str:
        return self.wordnet.lemma(word, "a") if self.wordnet is not None else word

    def verb(self, word: str) -> str:
        if self.wordnet is not None and self.wordnet.has(word, "v"):
            # morphy's first form, not the shortest: "riding" is "ride", not "rid"
            return self.wordnet.base_forms(word, "v")[0].replace("_", " ")
        return word

    def is_verb(self, word: str) -> bool:
        """(With WordNet) a verb that is neither noun nor adjective: "depicts", "seen"."""
        wn = self.wordnet
        return wn is not None and wn.has(word, "v") and not (wn.has(word, "n") or wn.has(word, "a"))

    def is_attribute(self, word: str) -> bool:
        """A describing word: listed, a participle, or (with WordNet) an adjective that is
        not also a noun."""
        if word in ATTRIBUTE_WORDS or word.endswith("-colored") or word.endswith("-haired"):
            return True
        if self.wordnet is not None:
            return self.wordnet.has(word, "a") and not self.wordnet.has(word, "n")
        return len(word) > 5 and word.endswith(("ful", "ous", "less"))

    def is_compound(self, phrase: str) -> bool:
        """A multi-word object name: a COCO name ("hot dog"), or a WordNet noun whose
        modifiers are not describing words ("clock tower", but not "black cat")."""
        if phrase in syn.coco_canonical():
            return True
        words = phrase.split()
        if self.wordnet is None or len(words) < 2 or any(w in ATTRIBUTE_WORDS for w in words):
            return False
        return self.wordnet.has(phrase, "n")


def _participle(word: str) -> bool:
    return word.endswith("ing") or (len(word) > 4 and word.endswith("ed"))


def tokenize(text: str) -> list[list[str]]:
    """Sentences of lower-case tokens: words (with a possessive ``'s`` split off), numbers and
    commas.

    >>> tokenize("The dog's ball is red. Two cats, asleep!")
    [['the', 'dog', "'s", 'ball', 'is', 'red'], ['two', 'cats', ',', 'asleep']]
    """
    sentences: list[list[str]] = []
    for sentence in _SENTENCE.split(text.lower()):
        tokens: list[str] = []
        for token in _TOKEN.findall(sentence):
            if token.endswith("'s"):
                tokens.extend([token[:-2], "'s"])
            else:
                tokens.append(token)
        if tokens:
            sentences.append(tokens)
    return sentences


@dataclass(slots=True)
class _Phrase:
    start: int  # first token of the phrase's words (after its determiner)
    end: int  # one past the last word
    words: list[str]


def _phrases(tokens: list[str], lem: Lemmatizer) -> list[_Phrase]:
    """Noun-phrase chunks of one sentence (README: "CAPTURE", the rules); the word classes are
    :func:`~factcap.text.english.content_words`'s."""
    content = set(content_words(" ".join(t for t in tokens if t not in (",", "'s"))))
    content -= _PREPOSITIONS | _NOT_NOUNS

    def is_content(i: int) -> bool:
        return 0 <= i < len(tokens) and tokens[i] in content and not tokens[i].endswith("ly")

    def starts_after(i: int) -> bool:  # may a bare content word at i begin a phrase?
        return i == 0 or not is_content(i - 1)

    phrases: list[_Phrase] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        led = token in _DETERMINERS or token.isdigit()
        if not led and not (is_content(i) and starts_after(i)):
            i += 1
            continue
        j = i + 1 if led else i
        count = NUMBER_WORDS.get(token) or (int(token) if token.isdigit() else None)
        words: list[str] = []
        while j < len(tokens) and len(words) < _MAX_PHRASE:
            word = tokens[j]
            nxt = tokens[j + 1] if j + 1 < len(tokens) else ""
            if not is_content(j):
                # a participle right after the determiner (or after describing words) and
                # before a content word modifies it: "a sleeping cat", "a striped shirt"
                describing = all(lem.is_attribute(w) for w in words)
                if not (_participle(word) and describing and is_content(j + 1)):
                    break
            elif (word.endswith("s") and not word.endswith("ss") and nxt in _DETERMINERS) or (
                lem.is_verb(word)
            ):
                break  # "a woman carries a bag", "the image depicts": a verb, not a noun
            words.append(word)
            j += 1
            if count and count > 1 and singular(word) != word:
                break  # "two dogs play": the plural noun closes the phrase
        if words:
            phrases.append(_Phrase(j - len(words), j, words))
        i = max(j, i + 1)
    return phrases


def _split_phrase(words: list[str], lem: Lemmatizer) -> tuple[str, list[str]] | None:
    """(object name, attributes) of a chunk, or None when it names no object."""
    head = words[-1]
    if head in _DETERMINERS or head.isdigit() or lem.is_attribute(head) or _participle(head):
        return None
    name_words = [head]
    rest = words[:-1]
    # the longest run ending at the head that is a known multi-word name ("hot dog")
    for k in range(len(rest), 0, -1):
        candidate = " ".join(rest[-k:] + [lem.noun(head)])
        if lem.is_compound(candidate) or lem.is_compound(" ".join(rest[-k:] + [head])):
            name_words = rest[-k:] + [head]
            rest = rest[:-k]
            break
    attributes: list[str] = []
    compound = True  # nouns right before the name belong to it: "clock tower"
    for word in reversed(rest):
        if compound and not (lem.is_attribute(word) or _participle(word)):
            name_words.insert(0, word)
            continue
        compound = False
        attributes.append(lem.adjective(word))
    return lem.noun(" ".join(name_words)), attributes[::-1]


def _relation(gap: list[str], lem: Lemmatizer) -> tuple[str, bool] | None:
    """(relation text, whether it starts with a preposition) from the words between two
    phrases, or None when they do not relate them."""
    if not gap or len(gap) > _MAX_GAP or any(t in _CONJ for t in gap):
        return None
    kept = [
        t
        for t in gap
        if t not in _AUX and t not in _DETERMINERS and t != "there" and not t.endswith("ly")
    ]
    if not kept or any(t in STOP_OBJECTS for t in kept):
        return None  # "a cat in the image sits on a mat": no relation to read off
    words = [t if t in _PREPOSITIONS else lem.verb(t) for t in kept]
    return " ".join(words), kept[0] in _PREPOSITIONS


def rule_elements(
    text: str, lemmatizer: Lemmatizer | None = None, stop_words: bool = True
) -> Elements:
    """The offline extractor: objects, attributes and relations from noun-phrase chunks and
    simple patterns (README: "CAPTURE", the rules). ``lemmatizer`` None uses no WordNet.

    >>> rule_elements("A man in a blue shirt is riding a bicycle.").relations[:1]
    (('man', 'in', 'shirt'),)
    """
    lem = lemmatizer or Lemmatizer(None)
    objects: list[str] = []
    attributes: list[tuple[str, str]] = []
    relations: list[tuple[str, str, str]] = []
    for tokens in tokenize(text):
        named: list[tuple[_Phrase, str]] = []
        for phrase in _phrases(tokens, lem):
            split = _split_phrase(phrase.words, lem)
            if split is None:
                continue
            name, attrs = split
            named.append((phrase, name))
            attributes.extend((name, a) for a in attrs)
            # predicative attributes: "the sofa is red and soft"
            k = phrase.end
            if k < len(tokens) and tokens[k] in _LINKING:
                k += 1
                while k < len(tokens):
                    t = tokens[k]
                    if t in _DEGREE or t in ("and", ","):
                        k += 1
                    elif _participle(t) and k + 1 < len(tokens) and tokens[k + 1] in _PREPOSITIONS:
                        break  # "is surrounded by": a relation, read below
                    elif lem.is_attribute(t) and t not in _PREPOSITIONS:
                        attributes.append((name, lem.adjective(t)))
                        k += 1
                    else:
                        break
        subject: str | None = None
        for n, (phrase, name) in enumerate(named):
            if n == 0:
                subject = name
                continue
            previous, previous_name = named[n - 1]
            gap_start = previous.end
            gap_end = phrase.start
            while gap_end > gap_start and tokens[gap_end - 1] in _DETERMINERS:
                gap_end -= 1
            gap = tokens[gap_start:gap_end]
            if any(t in _CONJ for t in gap):
                subject = name  # a new clause
                continue
            found = _relation(gap, lem)
            if found is None:
                continue
            relation, prepositional = found
            head = previous_name if prepositional or subject is None else subject
            if head != name:
                relations.append((head, relation, name))
        objects.extend(name for _, name in named)
    if stop_words:
        objects = [
            o for o in objects if o not in STOP_OBJECTS and o.split()[-1] not in STOP_OBJECTS
        ]
    return Elements.of(objects, attributes, relations)


# --- the LLM extractor ----------------------------------------------------------------------

EXTRACT_PROMPT = """List the visual elements of this image caption as JSON with three keys:
"objects": the physical things it mentions, as singular nouns (e.g. "dog", "traffic light");
"attributes": [object, attribute] pairs for the words describing them (colour, size, material,
shape, state), e.g. ["car", "red"];
"relations": [subject, relation, object] triples for spatial relations and actions between
objects, e.g. ["cat", "on", "sofa"], ["man", "ride", "bicycle"].
Use only words from the caption. Answer with the JSON object only.

Caption: {caption}"""


def extraction_prompt(caption: str) -> str:
    """The user message that asks the LLM for one caption's elements."""
    return EXTRACT_PROMPT.format(caption=" ".join(caption.split()))


def _clean(value: Any, limit: int = 60) -> str:
    if not isinstance(value, str):
        return ""
    return " ".join(re.sub(r"[^a-z0-9\- ']", " ", value.lower()).split())[:limit]


def _items(value: Any, keys: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Rows of ``len(keys)`` strings from a list of lists, of objects with ``keys``, or (one
    key) of strings."""
    rows: list[tuple[str, ...]] = []
    if not isinstance(value, list):
        return rows
    for item in value:
        if isinstance(item, dict):
            fields = [item.get(k) for k in keys]
            if keys[-2:] == ("relation", "object") and fields[1] is None:
                fields[1] = item.get("predicate")
        elif isinstance(item, (list, tuple)):
            fields = list(item)
        elif isinstance(item, str) and len(keys) == 1:
            fields = [item]
        else:
            continue
        if len(fields) != len(keys):
            continue
        cleaned = tuple(_clean(f) for f in fields)
        if all(cleaned):
            rows.append(cleaned)
    return rows


def parse_elements(answer: str, lemmatizer: Lemmatizer | None = None) -> Elements:
    """The elements in an LLM's answer to :data:`EXTRACT_PROMPT`, normalised like the rules'
    (singular nouns, lemmatised attributes). Raises :class:`ParseError` when the answer holds
    no JSON object with an ``objects``, ``attributes`` or ``relations`` list.

    >>> parse_elements('```json\\n{"objects": ["Dogs"], "attributes": [["dogs", "brown"]]}```',
    ...                Lemmatizer(None)).attributes
    (('dog', 'brown'),)
    """
    lem = lemmatizer or Lemmatizer(None)
    value = extract_json(answer)
    if not isinstance(value, dict):
        raise ParseError("the answer is not a JSON object")
    value = {str(k).lower(): v for k, v in value.items()}
    if not any(isinstance(value.get(k), list) for k in ("objects", "attributes", "relations")):
        raise ParseError("the answer has no objects, attributes or relations list")
    objects = [lem.noun(o) for (o,) in _items(value.get("objects"), ("object",))]
    attributes = [
        (lem.noun(o), lem.adjective(a))
        for o, a in _items(value.get("attributes"), ("object", "attribute"))
    ]
    relations = [
        (lem.noun(s), " ".join(lem.verb(w) for w in r.split()), lem.noun(o))
        for s, r, o in _items(value.get("relations"), ("subject", "relation", "object"))
    ]
    return Elements.of(objects, attributes, relations)


def ground(elements: Elements, text: str, lemmatizer: Lemmatizer | None = None) -> Elements:
    """Keep only what the text says: every word of an object (and of a relation's subject and
    object) must occur in it, as must each attribute — an LLM may invent elements.

    >>> ground(Elements.of(["dog", "cat"], [("dog", "red")]), "Two dogs.").objects
    ('dog',)
    """
    lem = lemmatizer or Lemmatizer(None)
    words = {t for sentence in tokenize(text) for t in sentence}
    known = words | {lem.noun(w) for w in words} | {lem.adjective(w) for w in words}

    def grounded(phrase: str) -> bool:
        return all(w in known for w in phrase.split())

    return Elements.of(
        [o for o in elements.objects if grounded(o)],
        [(o, a) for o, a in elements.attributes if grounded(o) and grounded(a)],
        [(s, r, o) for s, r, o in elements.relations if grounded(s) and grounded(o)],
    )


# --- matching and scores --------------------------------------------------------------------

Same = Callable[[Any, Any], bool]


def hard_match(
    candidates: Sequence[Hashable], references: Sequence[Hashable], synonym: Same | None = None
) -> tuple[int, list[Any], list[Any]]:
    """One-to-one matching in CAPTURE's first two stages: equal elements, then (when
    ``synonym`` is given) synonymous ones among the rest, each greedily in order. Returns the
    number of matches and the unmatched candidate and reference elements.

    >>> hard_match(["dog", "sofa", "lamp"], ["couch", "dog"], lambda a, b: {a, b} == {"sofa", "couch"})
    (2, ['lamp'], [])
    """
    used_c: set[int] = set()
    used_r: set[int] = set()
    stages: list[Same] = [lambda a, b: a == b]
    if synonym is not None:
        stages.append(synonym)
    for same in stages:
        for i, c in enumerate(candidates):
            if i in used_c:
                continue
            for j, r in enumerate(references):
                if j not in used_r and same(c, r):
                    used_c.add(i)
                    used_r.add(j)
                    break
    rest_c = [c for i, c in enumerate(candidates) if i not in used_c]
    rest_r = [r for j, r in enumerate(references) if j not in used_r]
    return len(used_c), rest_c, rest_r


def soft_credit(
    candidates: Sequence[str],
    references: Sequence[str],
    vectors: Mapping[str, np.ndarray],
    threshold: float = 0.0,
) -> tuple[float, float]:
    """CAPTURE's soft stage: each candidate earns its best cosine with a reference, each
    reference its best cosine with a candidate (unit ``vectors``), clamped to [0, 1] and
    counted only when ≥ ``threshold``. Returns (candidate credit, reference credit).

    >>> v = {"a": np.array([1.0, 0.0]), "b": np.array([0.6, 0.8]), "c": np.array([0.0, 1.0])}
    >>> tuple(round(x, 6) for x in soft_credit(["a"], ["b", "c"], v))
    (0.6, 0.6)
    >>> soft_credit(["a"], ["b", "c"], v, threshold=0.7)
    (0.0, 0.0)
    """
    if not candidates or not references:
        return 0.0, 0.0
    c = np.stack([np.asarray(vectors[t], dtype=np.float64) for t in candidates])
    r = np.stack([np.asarray(vectors[t], dtype=np.float64) for t in references])
    sims = np.clip(c @ r.T, 0.0, 1.0)
    sims[sims < threshold] = 0.0
    return float(sims.max(axis=1).sum()), float(sims.max(axis=0).sum())


def prf(
    candidate_matched: float, reference_matched: float, n_candidates: int, n_references: int
) -> tuple[float, float, float]:
    """Precision, recall and F1 from matched amounts; 0 for an empty side.

    >>> prf(2, 2, 4, 2)
    (0.5, 1.0, 0.6666666666666666)
    >>> prf(0, 0, 0, 3)
    (0.0, 0.0, 0.0)
    """
    p = candidate_matched / n_candidates if n_candidates else 0.0
    r = reference_matched / n_references if n_references else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f1


def weighted_total(
    objects: float, attributes: float, relations: float, weights: Sequence[float] = WEIGHTS
) -> float:
    """CAPTURE's total: ``(α·objects + β·attributes + γ·relations) / (α + β + γ)``.

    >>> weighted_total(1.0, 1.0, 1.0)
    1.0
    """
    a, b, g = weights
    return (a * objects + b * attributes + g * relations) / (a + b + g)


_TYPES = ("object", "attribute", "relation")


def _relation_synonym(synonym: Same) -> Same:
    return lambda c, r: all(synonym(x, y) for x, y in zip(c, r, strict=True))


def _as_texts(kind: str, items: Sequence[Any]) -> list[str]:
    return [" ".join(i) for i in items] if kind == "relation" else list(items)


def compare(
    candidate: Elements, reference: Elements, synonym: Same | None = None
) -> dict[str, tuple[int, list[str], list[str], int, int]]:
    """Stages 1-2 for each element type: ``type → (matches, unmatched candidate texts,
    unmatched reference texts, n_candidate, n_reference)``."""
    sides = {
        "object": (list(candidate.objects), list(reference.objects), synonym),
        "attribute": (candidate.attribute_words(), reference.attribute_words(), synonym),
        "relation": (
            list(candidate.relations),
            list(reference.relations),
            _relation_synonym(synonym) if synonym else None,
        ),
    }
    out = {}
    for kind, (cands, refs, same) in sides.items():
        n, rest_c, rest_r = hard_match(cands, refs, same)
        out[kind] = (n, _as_texts(kind, rest_c), _as_texts(kind, rest_r), len(cands), len(refs))
    return out


def score_pair(
    compared: Mapping[str, tuple[int, list[str], list[str], int, int]],
    vectors: Mapping[str, np.ndarray] | None,
    threshold: float = 0.0,
    weights: Sequence[float] = WEIGHTS,
) -> dict[str, float]:
    """All values for one (candidate, reference) pair from :func:`compare`'s output, with the
    soft stage when ``vectors`` holds the unmatched texts' embeddings."""
    values: dict[str, float] = {}
    for kind in _TYPES:
        n, rest_c, rest_r, n_c, n_r = compared[kind]
        soft_c, soft_r = soft_credit(rest_c, rest_r, vectors, threshold) if vectors else (0, 0)
        p, r, f1 = prf(n + soft_c, n + soft_r, n_c, n_r)
        values[f"{kind}_precision"], values[f"{kind}_recall"], values[f"{kind}_f1"] = p, r, f1
    for name in ("precision", "recall", "f1"):
        values[name] = weighted_total(*(values[f"{k}_{name}"] for k in _TYPES), weights=weights)
    return values


class Capture(Metric):
    """CAPTURE detail precision/recall against reference captions (README: "CAPTURE"). The
    LLM's answer is read with :func:`~factcap.text.jsonrepair.extract_json`; synonyms are
    :func:`~factcap.text.synonyms.are_synonyms`.

    Options: ``extractor`` (``auto`` | ``llm`` | ``rules``), ``synonym_matching`` and
    ``soft_matching`` (on), ``soft_threshold`` (0.0), ``soft_role`` (``auto`` |
    ``text_embedder`` | ``embedder``), ``object_weight`` / ``attribute_weight`` /
    ``relation_weight`` (0.5 / 0.5 / 0.2), ``stop_words`` (on), ``max_new_tokens`` of the
    LLM's answer (384), ``wordnet`` (a WordNet directory; default ``$FACTCAP_WORDNET`` or the
    system's).

    >>> from factcap.metrics.resources import Resources
    >>> s = Sample("1", "a.jpg", "final:detailed", "A black cat on a red sofa.",
    ...            references=["A black cat lies on a sofa."])
    >>> score = Capture(extractor="rules", soft_matching=False).score([s], Resources({}))[0]
    >>> round(score.values["capture_object_f1"], 3), score.info["capture_extractor"]
    (1.0, 'rules')
    """

    name = "capture"
    value_names = (
        "capture",
        "capture_object_f1",
        "capture_attribute_f1",
        "capture_relation_f1",
        "capture_precision",
        "capture_recall",
    )
    needs = frozenset({"references", "llm", "text_embedder"})

    def __init__(
        self,
        *,
        extractor: str = "auto",
        synonym_matching: bool = True,
        soft_matching: bool = True,
        soft_threshold: float = 0.0,
        soft_role: str = "auto",
        object_weight: float = WEIGHTS[0],
        attribute_weight: float = WEIGHTS[1],
        relation_weight: float = WEIGHTS[2],
        stop_words: bool = True,
        max_new_tokens: int = 384,
        wordnet: str | None = None,
    ):
        if extractor not in ("auto", "llm", "rules"):
            raise ConfigError(f"capture: extractor must be auto, llm or rules, not {extractor!r}")
        if soft_role not in ("auto", "text_embedder", "embedder"):
            raise ConfigError(
                f"capture: soft_role must be auto, text_embedder or embedder, not {soft_role!r}"
            )
        weights = (float(object_weight), float(attribute_weight), float(relation_weight))
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"capture: weights must be >= 0 with a positive sum, got {weights}")
        if not 0.0 <= float(soft_threshold) <= 1.0:
            raise ConfigError(f"capture: soft_threshold must be in [0, 1], got {soft_threshold}")
        if int(max_new_tokens) < 1:
            raise ConfigError(f"capture: max_new_tokens must be >= 1, got {max_new_tokens}")
        self.extractor = extractor
        self.synonym_matching = bool(synonym_matching)
        self.soft_matching = bool(soft_matching)
        self.soft_threshold = float(soft_threshold)
        self.soft_role = soft_role
        self.weights = weights
        self.stop_words = bool(stop_words)
        self.max_new_tokens = int(max_new_tokens)
        self.wordnet_root = wordnet
        wn = syn.wordnet(wordnet)
        self.lemmatizer = Lemmatizer(wn)
        self.synonym_source = syn.synonym_source(wordnet) if self.synonym_matching else "off"
        # text -> (elements, extractor that produced them); references recur across sources
        self._cache: dict[tuple[str, str], Elements] = {}
        self._same = self._synonym if self.synonym_matching else None

    def _synonym(self, a: str, b: str) -> bool:
        return syn.are_synonyms(a, b, self.wordnet_root)

    # -- extraction --

    def _use_llm(self, resources: Any) -> bool:
        if self.extractor == "rules":
            return False
        available = resources.available("llm")
        if self.extractor == "llm" and not available:
            raise KeyError("capture: extractor=llm, but no llm model is configured")
        return available

    def extract(self, texts: Sequence[str], resources: Any) -> tuple[dict[str, Elements], bool]:
        """Elements of every distinct text (one batched LLM call for those not cached yet), and
        whether the LLM was asked. Which extractor produced a text's elements is in
        :meth:`extracted_by`."""
        use_llm = self._use_llm(resources)
        kinds = ("llm", "rules") if use_llm else ("rules",)
        out: dict[str, Elements] = {}
        todo: list[str] = []
        for text in dict.fromkeys(texts):
            cached = next((self._cache[(text, k)] for k in kinds if (text, k) in self._cache), None)
            if cached is None:
                todo.append(text)
            else:
                out[text] = cached
        if use_llm and todo:
            conversations = [[{"role": "user", "content": extraction_prompt(t)}] for t in todo]
            answers = resources.get("llm").chat(
                conversations, max_new_tokens=self.max_new_tokens, temperature=0.0
            )
            rest = []
            for text, answer in zip(todo, answers, strict=True):
                try:
                    parsed = parse_elements(answer, self.lemmatizer)
                except ParseError:
                    rest.append(text)
                    continue
                elements = ground(parsed, text, self.lemmatizer)
                if self.stop_words:
                    elements = _drop_stop_objects(elements)
                self._cache[(text, "llm")] = out[text] = elements
            todo = rest
        for text in todo:
            elements = rule_elements(text, self.lemmatizer, self.stop_words)
            self._cache[(text, "rules")] = out[text] = elements
        return out, use_llm

    def extracted_by(self, text: str, asked_llm: bool = True) -> str:
        """``llm`` or ``rules``: which extractor gave ``text``'s elements in :meth:`extract`."""
        return "llm" if asked_llm and (text, "llm") in self._cache else "rules"

    # -- scoring --

    def _soft_backend(self, resources: Any) -> tuple[str | None, str]:
        if not self.soft_matching:
            return None, "off (soft_matching=False)"
        roles = ["text_embedder", "embedder"] if self.soft_role == "auto" else [self.soft_role]
        for role in roles:
            if resources.available(role):
                what = "sentence embeddings" if role == "text_embedder" else "CLIP text embeddings"
                return role, f"{role} ({what})"
        return None, f"off: no {' or '.join(roles)} model is configured"

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores: list[Score | None] = [None] * len(samples)
        todo: list[int] = []
        for i, sample in enumerate(samples):
            refs = [r for r in sample.references if r and r.strip()]
            if not sample.caption or not sample.caption.strip():
                scores[i] = Score.failed(self.value_names, "empty caption")
            elif not refs:
                scores[i] = Score.failed(
                    self.value_names, "no references for this image: capture needs them"
                )
            else:
                todo.append(i)
        if not todo:
            return scores  # type: ignore[return-value]

        texts = [t for i in todo for t in [samples[i].caption, *samples[i].references] if t.strip()]
        elements, asked_llm = self.extract(texts, resources)

        pairs: dict[int, list[dict]] = {}
        unmatched: set[str] = set()
        for i in todo:
            cand = elements[samples[i].caption]
            refs = [r for r in samples[i].references if r.strip()]
            pairs[i] = [compare(cand, elements[r], self._same) for r in refs]
            for compared in pairs[i]:
                for _, rest_c, rest_r, _, _ in compared.values():
                    if rest_c and rest_r:
                        unmatched.update(rest_c)
                        unmatched.update(rest_r)

        role, soft_info = self._soft_backend(resources)
        vectors: dict[str, np.ndarray] | None = None
        if role is not None and unmatched:
            ordered = sorted(unmatched)
            matrix = resources.text_embeddings(ordered, role=role)  # one batch for all
            vectors = dict(zip(ordered, np.asarray(matrix, dtype=np.float64), strict=True))

        for i in todo:
            sample = samples[i]
            per_ref = [score_pair(c, vectors, self.soft_threshold, self.weights) for c in pairs[i]]
            mean = {k: sum(v[k] for v in per_ref) / len(per_ref) for k in per_ref[0]}
            values = {
                "capture": mean["f1"],
                "capture_object_f1": mean["object_f1"],
                "capture_attribute_f1": mean["attribute_f1"],
                "capture_relation_f1": mean["relation_f1"],
                "capture_precision": mean["precision"],
                "capture_recall": mean["recall"],
            }
            own = [t for t in [sample.caption, *sample.references] if t.strip()]
            by = [self.extracted_by(t, asked_llm) for t in own]
            info: dict[str, Any] = {
                "capture_extractor": "+".join(sorted(set(by))),
                "capture_synonyms": self.synonym_source,
                "capture_soft": soft_info,
                "capture_elements": elements[sample.caption].counts(),
            }
            if asked_llm and "rules" in by:
                info["capture_fallback"] = (
                    f"the LLM's answer for {by.count('rules')} of this sample's {len(by)} texts "
                    "could not be parsed as JSON: the rule-based extractor was used for them"
                )
            scores[i] = Score(values, info=info)
        return scores  # type: ignore[return-value]


def _drop_stop_objects(elements: Elements) -> Elements:
    keep = [
        o for o in elements.objects if o not in STOP_OBJECTS and o.split()[-1] not in STOP_OBJECTS
    ]
    return Elements.of(keep, elements.attributes, elements.relations)
