"""English without a model: the one singular and plural, number words, content words.

**Number.** :func:`singular` and :func:`plural` are rule-based, with tables for what the rules
get wrong. They are used wherever factcap compares or asks about objects: the pipeline's
fallback claims (the subject is what the detector is asked for), CHAIR's mentions, CAPTURE's
rule extractor. Choices worth knowing:

- Input is a lower-case noun or noun phrase; other case is kept as it was ("Dogs" → "Dog").
- In a phrase, only the head changes: the last word ("hot dogs" → "hot dog"), or the word
  before "of" ("cups of coffee" → "cup of coffee"; "pair of jeans" is left as it is). In a
  hyphenated word, the last part ("t-shirts" → "t-shirt").
- Words with one form for both numbers, and plural-only nouns, never change: "sheep", "fish",
  "series", "species", "news", "scissors", "jeans", "pants", "shorts", "clothes", "physics",
  "sunglasses", and "skis" (CHAIR's COCO table names the category so).
- "glasses" → "glass": in pictures, glasses are mostly drinking glasses, and spectacles are
  also called "eyeglasses" / "sunglasses", which stay as they are.
- "people" → "person" (the COCO category), "dice" → "die", "cacti" → "cactus".
- Words of three letters or fewer are left alone ("bus", "gas", "its") unless a table lists
  them ("men" → "man").

>>> [singular(w) for w in ["ties", "pies", "buses", "ponies", "knives", "glasses", "news"]]
['tie', 'pie', 'bus', 'pony', 'knife', 'glass', 'news']
>>> [plural(w) for w in ["tie", "bus", "pony", "knife", "policeman", "sheep", "cup of tea"]]
['ties', 'buses', 'ponies', 'knives', 'policemen', 'sheep', 'cups of tea']

**Words.** :func:`content_words` lists the words that are neither function words nor common
verbs, by the word lists below, with no model. Noun phrases (what the fallback claim
extractor asks a detector for) are :mod:`factcap.text.chunk`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

# --- singular and plural ----------------------------------------------------------------------

#: singular → plural, for nouns whose plural no rule gets right; read both ways.
_IRREGULAR: dict[str, str] = {
    "man": "men",
    "woman": "women",
    "child": "children",
    "person": "people",
    "mouse": "mice",
    "louse": "lice",
    "dormouse": "dormice",
    "titmouse": "titmice",
    "goose": "geese",
    "tooth": "teeth",
    "foot": "feet",
    "ox": "oxen",
    "die": "dice",
    "cactus": "cacti",
    "fungus": "fungi",
    "nucleus": "nuclei",
    "stimulus": "stimuli",
    "radius": "radii",
    "alumnus": "alumni",
    "criterion": "criteria",
    "phenomenon": "phenomena",
    "bacterium": "bacteria",
    "analysis": "analyses",
    "crisis": "crises",
    "thesis": "theses",
    "hypothesis": "hypotheses",
    "diagnosis": "diagnoses",
    "oasis": "oases",
    "parenthesis": "parentheses",
    "matrix": "matrices",
    "vertex": "vertices",
    # -f / -fe → -ves
    "knife": "knives",
    "wife": "wives",
    "life": "lives",
    "leaf": "leaves",
    "shelf": "shelves",
    "loaf": "loaves",
    "calf": "calves",
    "wolf": "wolves",
    "half": "halves",
    "scarf": "scarves",
    "thief": "thieves",
    "elf": "elves",
    "sheaf": "sheaves",
    "hoof": "hooves",
    "wharf": "wharves",
    # -o → -oes
    "potato": "potatoes",
    "tomato": "tomatoes",
    "hero": "heroes",
    "echo": "echoes",
    "volcano": "volcanoes",
    "mosquito": "mosquitoes",
    "torpedo": "torpedoes",
    "veto": "vetoes",
    "domino": "dominoes",
    "mango": "mangoes",
    "buffalo": "buffaloes",
    "tornado": "tornadoes",
    "embargo": "embargoes",
    "grotto": "grottoes",
    "motto": "mottoes",
    "cargo": "cargoes",
    # singulars in -s that a rule would cut
    "bus": "buses",
    "gas": "gases",
    "lens": "lenses",
    "canvas": "canvases",
    "atlas": "atlases",
    "alias": "aliases",
    "bias": "biases",
    "iris": "irises",
    "quiz": "quizzes",
    "fez": "fezzes",
    # a short word the three-letter rule would leave alone
    "tv": "tvs",
}
#: plural → singular only: a second plural, or one whose singular pluralises otherwise.
_SINGULAR_ONLY: dict[str, str] = {
    "busses": "bus",
    "octopi": "octopus",
    "hippopotami": "hippopotamus",
    "antennae": "antenna",
    "larvae": "larva",
    "vertebrae": "vertebra",
    "formulae": "formula",
    "indices": "index",
    "appendices": "appendix",
    "dwarves": "dwarf",
    "axes": "axe",
    "passers-by": "passer-by",
}
_SINGULAR: dict[str, str] = {p: s for s, p in _IRREGULAR.items()} | _SINGULAR_ONLY

#: Nouns with one form for both numbers, plural-only nouns, and words ending in -s that are no
#: plurals; :func:`singular` and :func:`plural` leave them alone.
_UNCHANGED = frozenset(
    """sheep fish deer moose bison swine aircraft spacecraft hovercraft salmon trout cod squid
    shrimp offspring series species news scissors pants jeans shorts trousers tights leggings
    pajamas pyjamas sunglasses eyeglasses spectacles goggles binoculars pliers tongs tweezers
    clothes skis physics mathematics economics athletics politics gymnastics aerobics
    electronics ethics linguistics genetics logistics measles mumps diabetes herpes rabies
    billiards chassis corps headquarters barracks crossroads gallows means odds thanks suds
    cosmos chaos ethos pathos kudos rhinoceros asbestos thermos always perhaps towards
    afterwards upwards downwards backwards forwards outdoors indoors upstairs downstairs
    sometimes besides whereas overseas nevertheless""".split()
)

#: Singulars whose plural just adds -s although the singular rules would cut more (or less)
#: off it: -ie ("ties", not "ty"), -che, consonant + -use, -i, -u.
_PLUS_S = frozenset(
    """tie pie lie cookie movie zombie hippie yuppie calorie brownie selfie goalie smoothie
    hoodie rookie beanie birdie prairie sortie genie collie freebie veggie budgie groupie
    newbie nightie necktie bowtie magpie pixie rotisserie lingerie menagerie reverie coterie
    cowrie talkie junkie roadie hoagie wheelie stogie bookie foodie techie hottie caddie
    auntie bootie sweetie brasserie patisserie creperie
    niche cache cliche moustache mustache avalanche ache headache toothache stomachache
    backache earache heartache quiche brioche creche psyche douche pastiche microfiche cloche
    use fuse muse ruse excuse abuse misuse recluse refuse hypotenuse
    taxi kiwi bikini martini safari alibi yeti emoji salami zucchini tsunami mini chili wiki
    corgi broccoli menu emu gnu zebu tutu guru haiku bayou""".split()
)

#: Compounds of an irregular noun change like it: "grandchildren", "bookshelves".
_COMPOUND_HEADS = ("child", "person", "tooth", "foot", "knife", "wife", "shelf", "wolf")
_COMPOUND_HEADS += ("loaf", "thief", "scarf")
_COMPOUND_PLURALS = tuple(_IRREGULAR[s] for s in _COMPOUND_HEADS)

#: Singulars in -men ("specimen"), and nouns in -man whose plural is -mans ("humans").
_MEN_SINGULARS = frozenset(
    """specimen abdomen omen stamen semen hymen regimen amen acumen albumen bitumen lumen rumen
    yemen germen dolmen ramen cyclamen foramen""".split()
)
_MAN_REGULAR = frozenset(
    """human german shaman caiman cayman talisman ottoman walkman roman norman doberman
    pacman dolman desman firman ataman""".split()
)
#: -ch said as k: +s, not +es ("stomachs").
_CH_AS_K = frozenset("stomach monarch epoch patriarch matriarch oligarch eunuch tech loch".split())
_VOWELS = "aeiou"


def _singular_word(w: str) -> str:
    if w in _SINGULAR:
        return _SINGULAR[w]
    if w in _UNCHANGED or w in _IRREGULAR or len(w) <= 3:
        return w
    if w.endswith("s") and w[:-1] in _PLUS_S:
        return w[:-1]
    for head, tail in zip(_COMPOUND_HEADS, _COMPOUND_PLURALS, strict=True):
        if w.endswith(tail):
            return w[: -len(tail)] + head
    if w.endswith("men"):
        return w if w in _MEN_SINGULARS else w[:-3] + "man"
    if w.endswith("ies"):
        return w[:-1] if len(w) <= 4 else w[:-3] + "y"  # "ties", "pies"; "ponies"
    if w.endswith(("sses", "zzes", "tzes", "xes", "ches", "shes")):
        return w[:-2]
    if w.endswith("uses") and w[-5] not in _VOWELS:
        return w[:-2]  # "buses", "bonuses"; but "houses", "causes"
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def _plural_word(w: str) -> str:
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in _UNCHANGED or w in _SINGULAR or not w:
        return w
    for head, tail in zip(_COMPOUND_HEADS, _COMPOUND_PLURALS, strict=True):
        if w.endswith(head):
            return w[: -len(head)] + tail
    if w.endswith("man") and w not in _MAN_REGULAR:
        return w[:-3] + "men"
    if w in _PLUS_S:
        return w + "s"
    if w.endswith("y") and len(w) > 1 and w[-2] not in _VOWELS:
        return w[:-1] + "ies"
    if w.endswith(("s", "x", "z", "ch", "sh")) and w not in _CH_AS_K:
        return w + "es"
    return w + "s"


def _on_word(word: str, change: Callable[[str], str]) -> str:
    """``change`` applied to one word: case kept, a hyphenated word changed in its last part."""
    low = word.lower()
    if low in _SINGULAR or low in _IRREGULAR or low in _UNCHANGED or "-" not in low.strip("-"):
        new = change(low)
    else:
        stem, _, last = low.rpartition("-")
        new = f"{stem}-{change(last)}" if last else low
    keep = len(os.path.commonprefix([low, new]))
    changed = word[:keep] + new[keep:]  # the case of the letters that stayed
    return changed.upper() if len(word) > 1 and word.isupper() else changed


def _on_head(phrase: str, change: Callable[[str], str]) -> str:
    words = phrase.split()
    if len(words) <= 1:
        return _on_word(words[0], change) if words else phrase
    head = words.index("of", 1) - 1 if "of" in words[1:-1] else len(words) - 1
    words[head] = _on_word(words[head], change)
    return " ".join(words)


def singular(word: str) -> str:
    """The singular of a noun or noun phrase (see the module docstring for the rules).

    >>> [singular(w) for w in ["dogs", "cities", "benches", "leaves", "policemen", "tomatoes"]]
    ['dog', 'city', 'bench', 'leaf', 'policeman', 'tomato']
    >>> singular("hot dogs"), singular("pairs of jeans"), singular("T-shirts")
    ('hot dog', 'pair of jeans', 'T-shirt')
    """
    return _on_head(word, _singular_word)


def plural(word: str) -> str:
    """The plural of a singular noun or noun phrase; the inverse of :func:`singular`.

    >>> [plural(w) for w in ["dog", "city", "boy", "box", "child", "photo", "tomato", "lens"]]
    ['dogs', 'cities', 'boys', 'boxes', 'children', 'photos', 'tomatoes', 'lenses']
    """
    return _on_head(word, _plural_word)


# --- word lists -------------------------------------------------------------------------------

NUMBER_WORDS: dict[str, int | None] = {
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
#: Articles, demonstratives, possessives, quantifiers and the one-word number words: no
#: content words (:mod:`factcap.text.chunk` has the chunker's own, larger tables).
DETERMINERS = frozenset(
    """a an the this that these those some its his her their my our another each every""".split()
) | frozenset(w for w in NUMBER_WORDS if " " not in w)
#: Function words and picture words: no content words.
STOP_WORDS = frozenset(
    """is are was were be being been and or but with on in at of to from by for near next
    under over above below behind beside while that which who as it there has have into onto
    front top side holding wearing sitting standing playing riding walking looking shows
    showing image photo picture view close up background foreground a an the its their his
    her this these those some very""".split()
) | frozenset(NUMBER_WORDS)
#: Common verbs of captions (base and third-person forms) and modals.
VERBS = frozenset(
    """sit sits stand stands play plays lie lies run runs walk walks look looks eat eats hold
    holds wear wears ride rides fly flies sleep sleeps rest rests wait waits stare stares can
    could will would appears seems drive drives grow grows hang hangs say says read reads
    lean leans swim swims""".split()
)
_WORD = re.compile(r"[a-z][a-z\-']*")


def _ends_phrase(word: str) -> bool:
    return (
        word in STOP_WORDS
        or word in VERBS
        or word.endswith("ing")
        or (len(word) > 4 and word.endswith("ed"))
    )


# --- content words ----------------------------------------------------------------------------


def content_words(text: str) -> list[str]:
    """Words of three or more letters that are neither function words nor common verbs.

    >>> content_words("Two dogs are playing with a red ball.")
    ['dogs', 'red', 'ball']
    """
    return [
        w
        for w in _WORD.findall(text.lower())
        if len(w) >= 3 and not _ends_phrase(w) and w not in DETERMINERS
    ]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


def clean_text(text: str) -> str:
    """Model output made printable: control and replacement characters dropped, spaces folded.

    >>> clean_text("a\\x00 cat\\n on  a\\ufffd mat")
    'a cat on a mat'
    """
    return " ".join(_CONTROL.sub("", text).split())
