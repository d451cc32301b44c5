"""The fallback claim extractor's noun-phrase chunker (issue 25): what it asks the detector for
when the LLM's answer cannot be parsed.

Scoring, for the held-out set: a caption's expected subjects are written as the noun phrase a
careful reader would name (modifiers included, singular); an extracted subject matches one when
it is that phrase or its head word alone ("cutting board" or "board"). A *miss* is an expected
subject (or count) that did not come out; a *wrong* subject is one that matches nothing expected
(a preposition, a verb, a word the caption never used as a noun).
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factcap.pipeline.parsing import fallback_claims
from factcap.schema import Claim
from factcap.text.chunk import ADJECTIVES, CLOSED_CLASS, VERB_FORMS, chunks, noun_phrases, tag

Expected = tuple[str, list[str], dict[str, int]]


def _ok(subject: str, expected: str) -> bool:
    return subject == expected or subject == expected.split()[-1]


def score(caption: str, subjects: list[str], counts: dict[str, int]) -> dict[str, list]:
    """Misses, wrong subjects, wrong counts and duplicate claims of ``caption``'s fallback."""
    claims: list[Claim] = fallback_claims([caption])
    objects = [c.subject for c in claims if c.kind == "object"]
    counted = [(c.subject, c.count) for c in claims if c.kind == "count"]
    misses = [e for e in subjects if not any(_ok(s, e) for s in objects)]
    misses += [
        f"{e}×{n}" for e, n in counts.items() if not any(_ok(s, e) and k == n for s, k in counted)
    ]
    wrong = [s for s in objects if not any(_ok(s, e) for e in subjects)]
    wrong += [
        f"{s}×{k}" for s, k in counted if not any(_ok(s, e) and n == k for e, n in counts.items())
    ]
    dupes = [k for k, n in Counter((c.kind, c.subject) for c in claims).items() if n > 1]
    return {"misses": misses, "wrong": wrong, "dupes": dupes}


# --- held-out set ---------------------------------------------------------------------------
# Written before the chunker's rules and never used to tune them: each caption differs from the
# issue's examples and from the table further down. The bar (issue 25): at most one miss in
# total, no wrong (non-noun or invented) subject, no duplicate claim.

HELD_OUT: list[Expected] = [
    ("a cat naps on a windowsill next to potted plants", ["cat", "windowsill", "potted plant"], {}),
    ("three horses graze in a green pasture", ["horse", "green pasture"], {"horse": 3}),
    ("children fly kites on a windy beach", ["child", "kite", "windy beach"], {}),
    (
        "a woman in a yellow raincoat walks her dog along the river",
        ["woman", "yellow raincoat", "dog", "river"],
        {},
    ),
    (
        "two boys and a girl share a pizza at a wooden table",
        ["boy", "girl", "pizza", "wooden table"],
        {"boy": 2},
    ),
    ("forks, knives and spoons lie on a napkin", ["fork", "knife", "spoon", "napkin"], {}),
    ("a bowl of soup next to a glass of water", ["bowl", "soup", "glass", "water"], {}),
    ("pigeons peck at crumbs under a park bench", ["pigeon", "crumb", "park bench"], {}),
    (
        "an old man reads a newspaper while his grandson plays with blocks",
        ["old man", "newspaper", "grandson", "block"],
        {},
    ),
    ("four cyclists ride past a lighthouse", ["cyclist", "lighthouse"], {"cyclist": 4}),
    ("ducks swim across a pond near tall reeds", ["duck", "pond", "tall reed"], {}),
    (
        "a chef slices onions and carrots on a cutting board",
        ["chef", "onion", "carrot", "cutting board"],
        {},
    ),
    ("five candles burn on a birthday cake", ["candle", "birthday cake"], {"candle": 5}),
    ("a stack of books sits beside a laptop", ["book", "laptop"], {}),
    ("cows stand behind a wooden fence", ["cow", "wooden fence"], {}),
    ("a little girl hugs a teddy bear", ["little girl", "teddy bear"], {}),
    ("several surfers wait for waves", ["surfer", "wave"], {}),
    ("two giraffes eat leaves from a tree", ["giraffe", "leaf", "tree"], {"giraffe": 2}),
    (
        "bananas, apples and oranges fill a basket",
        ["banana", "apple", "orange", "basket"],
        {},
    ),
    (
        "a man and a woman carry umbrellas through the rain",
        ["man", "woman", "umbrella", "rain"],
        {},
    ),
    ("a herd of elephants crosses a dusty road", ["elephant", "dusty road"], {}),
    ("skiers descend a snowy slope", ["skier", "snowy slope"], {}),
    (
        "a plate of cookies and a cup of tea on a tray",
        ["plate", "cookie", "cup", "tea", "tray"],
        {},
    ),
    ("six chairs surround a round table", ["chair", "round table"], {"chair": 6}),
    (
        "a boy throws a frisbee to his dog in the park",
        ["boy", "frisbee", "dog", "park"],
        {},
    ),
    ("buses and taxis wait at a traffic light", ["bus", "taxi", "traffic light"], {}),
    (
        "a firefighter sprays water on a burning house",
        ["firefighter", "water", "burning house"],
        {},
    ),
    ("monkeys climb trees in a jungle", ["monkey", "tree", "jungle"], {}),
    ("a kitten sleeps inside a shoe box", ["kitten", "shoe box"], {}),
    (
        "three women in hats sell vegetables at a market",
        ["woman", "hat", "vegetable", "market"],
        {"woman": 3},
    ),
    ("the puppy chews on a red slipper", ["puppy", "red slipper"], {}),
    ("a laptop and two mugs sit on a desk", ["laptop", "mug", "desk"], {"mug": 2}),
    ("they sit together on the grass near some tents", ["grass", "tent"], {}),
    ("a dog looks up at its owner", ["dog", "owner"], {}),
    ("men repair the roof of a barn", ["man", "roof", "barn"], {}),
]


#: A second held-out set, written after the rules had been tuned on the table below but before
#: this set was ever run (the first set had been read while the rules were written, so this one
#: is the stricter check); longer, prose-like answers included.
HELD_OUT_2: list[Expected] = [
    ("a young man rides a bicycle down a busy street", ["young man", "bicycle", "busy street"], {}),
    ("several sailboats are docked in a marina", ["sailboat", "marina"], {}),
    ("a brown bear catches a salmon in a river", ["brown bear", "salmon", "river"], {}),
    (
        "two chefs prepare food in a restaurant kitchen",
        ["chef", "food", "restaurant kitchen"],
        {"chef": 2},
    ),
    ("a lamp and a stack of magazines on a nightstand", ["lamp", "magazine", "nightstand"], {}),
    ("the girl blows out candles on her cake", ["girl", "candle", "cake"], {}),
    ("geese fly over a frozen lake", ["goose", "frozen lake"], {}),
    ("a woman feeds ducks by a pond", ["woman", "duck", "pond"], {}),
    ("an airplane takes off from a runway", ["airplane", "runway"], {}),
    ("a man holding a surfboard walks toward the ocean", ["man", "surfboard", "ocean"], {}),
    ("students sit at desks in a classroom", ["student", "desk", "classroom"], {}),
    ("a vase with tulips sits on a shelf", ["vase", "tulip", "shelf"], {}),
    ("four motorcycles are lined up outside a cafe", ["motorcycle", "cafe"], {"motorcycle": 4}),
    ("a toddler plays with toy trucks on the floor", ["toddler", "toy truck", "floor"], {}),
    ("zebras and giraffes drink at a watering hole", ["zebra", "giraffe", "watering hole"], {}),
    ("a cowboy ropes a calf at a rodeo", ["cowboy", "calf", "rodeo"], {}),
    ("a red fire truck parked next to a hydrant", ["red fire truck", "hydrant"], {}),
    ("a bride and groom cut their wedding cake", ["bride", "groom", "wedding cake"], {}),
    ("a squirrel nibbles on an acorn", ["squirrel", "acorn"], {}),
    ("a crowd of fans cheers at a concert", ["fan", "concert"], {}),
    ("the man wears a hat and a blue tie", ["man", "hat", "blue tie"], {}),
    ("a little dog barks at a mail carrier", ["little dog", "mail carrier"], {}),
    (
        "bread, cheese and grapes on a picnic blanket",
        ["bread", "cheese", "grape", "picnic blanket"],
        {},
    ),
    ("a lifeguard watches swimmers from a tall chair", ["lifeguard", "swimmer", "tall chair"], {}),
    ("three puppies nap in a wicker basket", ["puppy", "wicker basket"], {"puppy": 3}),
    ("a man fixes a flat tire on the side of the road", ["man", "flat tire", "road"], {}),
    ("an old woman knits a scarf by the fireplace", ["old woman", "scarf", "fireplace"], {}),
    ("a cat stretches on a sunny porch", ["cat", "sunny porch"], {}),
    ("the players shake hands after the game", ["player", "hand", "game"], {}),
    ("a farmer drives a tractor through a wheat field", ["farmer", "tractor", "wheat field"], {}),
    (
        "The image shows a large pizza topped with mushrooms and peppers on a wooden table.",
        ["large pizza", "mushroom", "pepper", "wooden table"],
        {},
    ),
    (
        "In this picture, two dogs are running across a grassy field while a man watches them.",
        ["dog", "grassy field", "man"],
        {"dog": 2},
    ),
    ("a teacher points at a chalkboard", ["teacher", "chalkboard"], {}),
    ("the waiter carries plates of pasta", ["waiter", "plate", "pasta"], {}),
    ("a man with a beard plays guitar on a stage", ["man", "beard", "guitar", "stage"], {}),
]


#: A third held-out set, written after one rule was added for a miss in the second set (a verb
#: agreeing with the noun before "of": "a crowd of fans *cheers*"), before this set was run.
HELD_OUT_3: list[Expected] = [
    (
        "a man in a wetsuit carries his board across the sand",
        ["man", "wetsuit", "board", "sand"],
        {},
    ),
    ("there is a bicycle leaning against a brick wall", ["bicycle", "brick wall"], {}),
    (
        "a little girl with pigtails blows bubbles in the yard",
        ["little girl", "pigtail", "bubble", "yard"],
        {},
    ),
    (
        "a police officer directs traffic at a busy intersection",
        ["police officer", "traffic", "busy intersection"],
        {},
    ),
    ("swans glide across a calm lake at sunset", ["swan", "calm lake", "sunset"], {}),
    ("a tray of muffins cools on the counter", ["tray", "muffin", "counter"], {}),
    ("kids in costumes knock on a door", ["kid", "costume", "door"], {}),
    (
        "a black dog that is carrying a stick runs through the snow",
        ["black dog", "stick", "snow"],
        {},
    ),
    ("two horses pull a wagon filled with hay", ["horse", "wagon", "hay"], {"horse": 2}),
    ("a woman sits on a park bench feeding pigeons", ["woman", "park bench", "pigeon"], {}),
    ("a mechanic works under the hood of a car", ["mechanic", "hood", "car"], {}),
    ("an old truck rusts in a field of tall weeds", ["old truck", "field", "tall weed"], {}),
    ("3 kittens play with a ball of yarn", ["kitten", "ball", "yarn"], {"kitten": 3}),
    (
        "a man reads a book while his cat sleeps on his lap",
        ["man", "book", "cat", "lap"],
        {},
    ),
    ("a baker pulls bread out of an oven", ["baker", "bread", "oven"], {}),
    ("fishermen repair their nets on a wooden dock", ["fisherman", "net", "wooden dock"], {}),
    ("a hiker stands on a rocky ledge above a valley", ["hiker", "rocky ledge", "valley"], {}),
    ("the bus is full of passengers", ["bus", "passenger"], {}),
    (
        "a tall glass of orange juice next to a plate of pancakes",
        ["tall glass", "orange juice", "plate", "pancake"],
        {},
    ),
    ("several cows are lying in the grass near a barn", ["cow", "grass", "barn"], {}),
    ("a girl on a swing laughs as her father pushes her", ["girl", "swing", "father"], {}),
    ("a plane flies above the clouds", ["plane", "cloud"], {}),
    (
        "A close-up of a bee collecting pollen from a yellow flower.",
        ["bee", "pollen", "yellow flower"],
        {},
    ),
    (
        "This photo shows a kitchen with white cabinets, a stainless steel fridge and a small "
        "table.",
        ["kitchen", "white cabinet", "stainless steel fridge", "small table"],
        {},
    ),
    ("a snowboarder jumps off a ramp", ["snowboarder", "ramp"], {}),
    ("a family eats dinner at a long table", ["family", "dinner", "long table"], {}),
    ("an empty street with parked cars on both sides", ["empty street", "parked car"], {}),
    ("a boy brushes his teeth in front of a mirror", ["boy", "tooth", "mirror"], {}),
    (
        "six ducklings follow their mother across a road",
        ["duckling", "mother", "road"],
        {"duckling": 6},
    ),
]


@pytest.mark.parametrize(
    "held_out", [HELD_OUT, HELD_OUT_2, HELD_OUT_3], ids=["first", "second", "third"]
)
def test_held_out_captions_come_out_right(held_out):
    assert len(held_out) >= 25
    report = {caption: score(caption, subjects, counts) for caption, subjects, counts in held_out}
    misses = {c: r["misses"] for c, r in report.items() if r["misses"]}
    wrong = {c: r["wrong"] for c, r in report.items() if r["wrong"]}
    dupes = {c: r["dupes"] for c, r in report.items() if r["dupes"]}
    assert sum(len(m) for m in misses.values()) <= 1, misses
    assert not wrong, wrong
    assert not dupes, dupes


# --- the table: the rules' own cases, each kind of phrase the chunker must read ---------------

TABLE: list[Expected] = [
    # the examples
    ("sheep graze near some benches", ["sheep", "bench"], {}),
    ("dishes and boxes on a shelf", ["dish", "box", "shelf"], {}),
    ("two women hold cacti", ["woman", "cactus"], {"woman": 2}),
    ("a plate of pies on a table", ["plate", "pie", "table"], {}),
    ("wolves run past churches", ["wolf", "church"], {}),
    ("two ties hang on a rack", ["tie", "rack"], {"tie": 2}),
    # noun or verb, by agreement and position
    ("a man signs papers at a desk", ["man", "paper", "desk"], {}),
    ("street signs on a pole", ["street sign", "pole"], {}),
    ("a surfer rides the waves", ["surfer", "wave"], {}),
    ("a woman waves at the camera", ["woman", "camera"], {}),
    ("birds perch on power lines", ["bird", "power line"], {}),
    ("deer drink from a stream", ["deer", "stream"], {}),
    ("a fruit stand sells apples", ["fruit stand", "apple"], {}),
    ("a man stands on a skateboard", ["man", "skateboard"], {}),
    ("traffic lights hang over an intersection", ["traffic light", "intersection"], {}),
    ("a woman lights a candle", ["woman", "candle"], {}),
    ("ocean waves crash against rocks", ["ocean wave", "rock"], {}),
    ("cattle graze in a field", ["cattle", "field"], {}),
    ("a man and woman walk along the beach", ["man", "woman", "beach"], {}),
    ("a boat docks at the pier", ["boat", "pier"], {}),
    ("the train arrives at the station", ["train", "station"], {}),
    ("children play soccer in a field", ["child", "soccer", "field"], {}),
    ("a boy flies a kite", ["boy", "kite"], {}),
    ("a kite flies high above the beach", ["kite", "beach"], {}),
    ("a chef cooks pasta in a large pot", ["chef", "pasta", "large pot"], {}),
    ("horses pull a carriage through the city", ["horse", "carriage", "city"], {}),
    ("an elephant sprays water with its trunk", ["elephant", "water", "trunk"], {}),
    ("a tennis player swings a racket", ["tennis player", "racket"], {}),
    ("people walk their dogs in a park", ["person", "dog", "park"], {}),
    # participles and -ing nouns
    ("a sleeping dog on a rug", ["sleeping dog", "rug"], {}),
    ("a man sitting on a bench reading a newspaper", ["man", "bench", "newspaper"], {}),
    ("sliced tomatoes on a wooden plate", ["sliced tomato", "wooden plate"], {}),
    ("a painting hangs on the wall", ["painting", "wall"], {}),
    ("a woman painting a fence", ["woman", "fence"], {}),
    ("the cat is sitting on the couch", ["cat", "couch"], {}),
    ("a man is riding a horse", ["man", "horse"], {}),
    ("two zebras standing in tall grass", ["zebra", "tall grass"], {"zebra": 2}),
    ("many cars are parked along the road", ["car", "road"], {}),
    # coordination and lists
    ("a red and white bus parked on the street", ["red and white bus", "street"], {}),
    ("a cat with a red or blue collar", ["cat", "collar"], {}),
    ("a laptop, a mouse and a keyboard on a desk", ["laptop", "mouse", "keyboard", "desk"], {}),
    ("a pizza with pepperoni and olives", ["pizza", "pepperoni", "olive"], {}),
    ("a plate with a sandwich and chips", ["plate", "sandwich", "chip"], {}),
    ("Young girls with umbrellas walk past shops", ["young girl", "umbrella", "shop"], {}),
    # counts
    ("two men and three women pose for a photo", ["man", "woman"], {"man": 2, "woman": 3}),
    ("three cats and a dog sleep together", ["cat", "dog"], {"cat": 3}),
    ("2 dogs and 4 cats", ["dog", "cat"], {"dog": 2, "cat": 4}),
    ("one dog and two cats", ["dog", "cat"], {"cat": 2}),
    ("five people", ["person"], {"person": 5}),
    ("two of the dogs are asleep", ["dog"], {}),
    ("several boats float in the harbor", ["boat", "harbor"], {}),
    # "of"
    ("a cup of coffee and a croissant", ["cup", "coffee", "croissant"], {}),
    ("a bowl of fruit sits on the kitchen counter", ["bowl", "fruit", "kitchen counter"], {}),
    ("a vase of flowers on a table next to a lamp", ["vase", "flower", "table", "lamp"], {}),
    ("a group of people stands near a bus", ["person", "bus"], {}),
    ("a bunch of bananas hangs from a hook", ["banana", "hook"], {}),
    ("a pair of scissors on a desk", ["scissors", "desk"], {}),
    ("a herd of sheep grazes on a hill", ["sheep", "hill"], {}),
    ("someone is holding a glass of wine", ["glass", "wine"], {}),
    # what names no object
    ("a photo of a cat sleeping on a sofa", ["cat", "sofa"], {}),
    ("in the background there are mountains", ["mountain"], {}),
    ("a man in front of a building", ["man", "building"], {}),
    ("on top of the fridge sits a cat", ["fridge", "cat"], {}),
    ("a stop sign at the corner of a street", ["stop sign", "street"], {}),
    ("a dog without a leash runs in a field", ["dog", "field"], {}),
    ("there are no people in the street", ["street"], {}),
    ("a man with no shirt", ["man"], {}),
    ("the sky is blue and the grass is green", ["sky", "grass"], {}),
    ("it is a sunny day at the beach", ["sunny day", "beach"], {}),
    ("she holds a baby in her arms", ["baby", "arm"], {}),
    ("they are playing frisbee on the grass", ["frisbee", "grass"], {}),
    ("a cat looks out of a window", ["cat", "window"], {}),
    # possessives, modifiers
    ("a man's hand holds a phone", ["man", "hand", "phone"], {}),
    ("A woman's dog chases a ball", ["woman", "dog", "ball"], {}),
    ("the dog's owner throws a stick", ["dog", "owner", "stick"], {}),
    ("a little boy eats an ice cream cone", ["little boy", "ice cream cone"], {}),
    ("an orange cat on a blue blanket", ["orange cat", "blue blanket"], {}),
    ("hot dogs on a grill", ["hot dog", "grill"], {}),
    ("a baby elephant follows its mother", ["baby elephant", "mother"], {}),
    ("a clock tower stands above the town square", ["clock tower", "town square"], {}),
    ("a dog with a frisbee in its mouth", ["dog", "frisbee", "mouth"], {}),
    # after "and"; participles like their base
    ("a man in a suit and tie stands at a podium", ["man", "suit", "tie", "podium"], {}),
    ("a man and a woman walk a dog", ["man", "woman", "dog"], {}),
    ("salt and pepper shakers on a table", ["salt", "pepper shaker", "table"], {}),
    ("a pizza cut into eight slices", ["pizza", "slice"], {"slice": 8}),
]


def _extracted(caption: str) -> tuple[set[str], dict[str, int | None]]:
    claims = fallback_claims([caption])
    objects = {c.subject for c in claims if c.kind == "object"}
    return objects, {c.subject: c.count for c in claims if c.kind == "count"}


@pytest.mark.parametrize(("caption", "subjects", "counts"), TABLE, ids=[c for c, *_ in TABLE])
def test_table(caption, subjects, counts):
    assert _extracted(caption) == (set(subjects), counts)


def test_the_table_is_large_and_has_no_held_out_caption():
    assert len(TABLE) >= 60
    assert not {c for c, *_ in TABLE} & {c for c, *_ in HELD_OUT}


# --- invariants -------------------------------------------------------------------------------

#: Words of every class, shuffled into word salad: whatever the order, no subject may be made of
#: a closed-class word, and no head may be an adjective or a verb form.
_VOCABULARY = sorted(
    {"the", "a", "two", "three", "several", "no", "his", "their", "it", "they", "someone"}
    | {"on", "past", "of", "with", "near", "to", "without", "and", "or", "while", "is", "are"}
    | {"can", "very", "together", "nearby", "that", "which", "'s", ",", "."}
    | {"red", "big", "wooden", "sleeping", "parked", "sliced", "happy", "left", "front"}
    | {"sit", "sits", "sat", "eat", "eats", "holds", "holding", "ran", "run", "graze", "sleeps"}
    | {"dog", "dogs", "sheep", "cacti", "women", "man", "signs", "waves", "light", "stand"}
    | {"photo", "group", "top", "painting", "building", "fries", "boxes", "people"}
)
_VERB_ONLY = {w for w, (_, kind) in VERB_FORMS.items() if kind in ("past", "ing", "ed")}


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_VOCABULARY), max_size=14))
def test_no_subject_is_a_closed_class_word_an_adjective_or_a_verb_form(words):
    for subject, _ in noun_phrases(" ".join(words)):
        kept = subject.split()
        joined = {w for k, w in enumerate(kept) if w == "and" and 0 < k < len(kept) - 1}
        # the one closed-class word a subject keeps: "and" between adjectives ("red and white")
        assert subject and not (set(kept) - joined) & CLOSED_CLASS, (words, subject)
        head = subject.split()[-1]
        assert head not in ADJECTIVES, (words, subject)
        assert head not in _VERB_ONLY or head in ("painting", "building"), (words, subject)


@pytest.mark.parametrize(
    "text",
    [
        "sheep graze near some benches",
        "wolves run past churches",
        "they sit together while it rains",
        "the man is very happy and quite tall",
        "two of them are there, next to it",
        "someone is holding something",
    ],
)
def test_no_closed_class_subject_in_prose(text):
    for subject, count in noun_phrases(text):
        assert not set(subject.split()) & CLOSED_CLASS, subject
        assert count is None or count > 0


def test_one_count_claim_per_subject_across_proposals():
    claims = fallback_claims(["two ties on a rack", "Two ties hang.", "two ties and a rack"])
    assert [(c.subject, c.count) for c in claims if c.kind == "count"] == [("tie", 2)]
    assert [c.subject for c in claims if c.kind == "object"] == ["tie", "rack"]


def test_disagreeing_counts_give_the_most_common_one_then_the_first():
    def counts(proposals: list[str]) -> list[int | None]:
        return [c.count for c in fallback_claims(proposals) if c.kind == "count"]

    assert counts(["2 cats", "three cats", "3 cats"]) == [3]
    assert counts(["four dogs", "two dogs"]) == [4]
    assert counts(["one cat", "a cat"]) == []  # a count of one is the object claim


def test_max_claims_keeps_objects_first():
    claims = fallback_claims(["two dogs, three cats and four birds"], max_claims=3)
    assert [(c.kind, c.subject) for c in claims] == [
        ("object", "dog"),
        ("object", "cat"),
        ("object", "bird"),
    ]


@pytest.mark.parametrize(
    ("text", "skipped"),
    [
        ("a photo of a dog", [("photo", "picture"), ("dog", "")]),
        ("a herd of cows", [("herd", "amount"), ("cow", "")]),
        ("in front of a house", [("front", "relational"), ("house", "")]),
        ("a tank top on a chair", [("tank top", ""), ("chair", "")]),
        (
            "no cars without a driver or lights",
            [("car", "negated"), ("driver", "negated"), ("light", "negated")],
        ),
        (
            "the sky is clear and the grass looks verdant",
            [("sky", ""), ("grass", ""), ("verdant", "predicate")],
        ),
        ("there is water on the floor", [("water", ""), ("floor", "")]),
    ],
)
def test_phrases_that_name_no_object_are_skipped_with_the_reason(text, skipped):
    assert [(p.subject, p.skip) for p in chunks(text)] == skipped


def test_tags_of_a_caption():
    assert tag("Two women hold cacti past the building's door.") == [
        ("two", "NUM"),
        ("women", "NOUN"),
        ("hold", "VERB"),
        ("cacti", "NOUN"),
        ("past", "PREP"),
        ("the", "DET"),
        ("building", "NOUN"),
        ("'s", "POSS"),
        ("door", "NOUN"),
        (".", "PUNCT"),
    ]


def test_odd_text_gives_no_or_plain_subjects():
    assert noun_phrases("") == []
    assert noun_phrases("!!! ??? ...") == []
    assert noun_phrases("²³ ½ and 123456789 of") == []
    assert noun_phrases("Café crème on a tablé") == [("café crème", None), ("tablé", None)]


def test_the_word_tables_agree_with_wordnet_where_it_is_installed():
    """The chunker never reads WordNet (its claims must not depend on the machine), but where
    WordNet is installed it checks the tables for slips: every verb a verb, every adjective an
    adjective, every listed -ing / -ly / -ed noun a noun."""
    from factcap.text import chunk
    from factcap.text.synonyms import INSTALL_HINT, wordnet

    wn = wordnet()
    if wn is None:
        pytest.skip(f"no WordNet on this machine ({INSTALL_HINT})")
    verbs = [*chunk._STRICT, *chunk._VERBAL, *chunk._NOMINAL]
    assert [v for v in verbs if not wn.has(v, "v")] == ["text"]  # newer than WordNet 3.0
    colours = ["navy", "turquoise", "vintage", "polka"]  # nouns used as adjectives
    assert [a for a in chunk._ADJECTIVE_BASES if not wn.has(a, "a")] == colours
    nouns = [*chunk._ING_NOUNS, *chunk._LY_NOUNS, *chunk.QUANTITIES, *chunk._ED_WORDS]
    assert sorted(n for n in nouns if not wn.has(n, "n") and not wn.has(n, "a")) == [
        "sunbed",
        "trolly",
    ]
