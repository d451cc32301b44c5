"""The one singular and plural (factcap.text.english), and what the pipeline asks a detector
for when it falls back to the proposals' noun phrases."""

from __future__ import annotations

import subprocess
import sys

import pytest

from factcap.pipeline.parsing import fallback_claims
from factcap.text.chunk import head_phrase, noun_phrases
from factcap.text.english import plural, singular

# (plural, singular): regular and irregular nouns, each spelling rule at least once
PAIRS = [
    # -s
    ("cars", "car"),
    ("dogs", "dog"),
    ("cats", "cat"),
    ("boys", "boy"),
    ("keys", "key"),
    ("days", "day"),
    ("toys", "toy"),
    ("photos", "photo"),
    ("pianos", "piano"),
    ("radios", "radio"),
    ("zoos", "zoo"),
    ("shoes", "shoe"),
    ("horses", "horse"),
    ("houses", "house"),
    ("vases", "vase"),
    ("roses", "rose"),
    ("tables", "table"),
    ("giraffes", "giraffe"),
    ("roofs", "roof"),
    ("gloves", "glove"),
    ("stomachs", "stomach"),
    ("humans", "human"),
    # -ie + s
    ("ties", "tie"),
    ("pies", "pie"),
    ("cookies", "cookie"),
    ("movies", "movie"),
    ("neckties", "necktie"),
    # consonant + y → -ies
    ("ponies", "pony"),
    ("cities", "city"),
    ("babies", "baby"),
    ("puppies", "puppy"),
    ("strawberries", "strawberry"),
    # -es after s, x, z, ch, sh
    ("buses", "bus"),
    ("glasses", "glass"),
    ("dresses", "dress"),
    ("boxes", "box"),
    ("foxes", "fox"),
    ("benches", "bench"),
    ("churches", "church"),
    ("dishes", "dish"),
    ("brushes", "brush"),
    ("quizzes", "quiz"),
    ("waltzes", "waltz"),
    ("lenses", "lens"),
    ("gases", "gas"),
    ("bonuses", "bonus"),
    ("viruses", "virus"),
    ("octopuses", "octopus"),
    ("niches", "niche"),
    # -o → -oes
    ("potatoes", "potato"),
    ("tomatoes", "tomato"),
    ("heroes", "hero"),
    ("volcanoes", "volcano"),
    # -f / -fe → -ves
    ("knives", "knife"),
    ("wives", "wife"),
    ("lives", "life"),
    ("leaves", "leaf"),
    ("shelves", "shelf"),
    ("loaves", "loaf"),
    ("scarves", "scarf"),
    ("calves", "calf"),
    ("halves", "half"),
    ("wolves", "wolf"),
    ("bookshelves", "bookshelf"),
    # irregular
    ("men", "man"),
    ("women", "woman"),
    ("policemen", "policeman"),
    ("firemen", "fireman"),
    ("children", "child"),
    ("grandchildren", "grandchild"),
    ("people", "person"),
    ("mice", "mouse"),
    ("geese", "goose"),
    ("teeth", "tooth"),
    ("feet", "foot"),
    ("oxen", "ox"),
    ("dice", "die"),
    ("cacti", "cactus"),
    ("fungi", "fungus"),
    ("analyses", "analysis"),
    ("crises", "crisis"),
    # -i, -u
    ("taxis", "taxi"),
    ("kiwis", "kiwi"),
    ("menus", "menu"),
    # phrases: the head changes
    ("hot dogs", "hot dog"),
    ("teddy bears", "teddy bear"),
    ("wine glasses", "wine glass"),
    ("cups of coffee", "cup of coffee"),
    ("t-shirts", "t-shirt"),
]
assert len(PAIRS) >= 60

# words and phrases that singular() must return as they are
UNCHANGED = [
    "glass",
    "grass",
    "dress",
    "bass",
    "bus",
    "gas",
    "lens",
    "canvas",
    "news",
    "scissors",
    "series",
    "species",
    "sheep",
    "fish",
    "deer",
    "pants",
    "jeans",
    "shorts",
    "clothes",
    "skis",
    "sunglasses",
    "physics",
    "status",
    "cactus",
    "octopus",
    "virus",
    "analysis",
    "chassis",
    "tennis",
    "famous",
    "specimen",
    "pumice",
    "dog",
    "pair of jeans",
    "hot dog",
    "",
]


@pytest.mark.parametrize(("many", "one"), PAIRS, ids=[p for p, _ in PAIRS])
def test_singular(many, one):
    assert singular(many) == one


@pytest.mark.parametrize(("many", "one"), PAIRS, ids=[s for _, s in PAIRS])
def test_plural(many, one):
    assert plural(one) == many


@pytest.mark.parametrize(("many", "one"), PAIRS, ids=[s for _, s in PAIRS])
def test_round_trips(many, one):
    assert singular(plural(one)) == one
    assert plural(singular(many)) == many


@pytest.mark.parametrize("word", UNCHANGED, ids=[w or "empty" for w in UNCHANGED])
def test_singular_leaves_alone(word):
    assert singular(word) == word


@pytest.mark.parametrize("word", ["sheep", "fish", "series", "species", "news", "jeans"])
def test_plural_leaves_alone(word):
    assert plural(word) == word


def test_case_is_kept():
    assert [singular(w) for w in ("Dogs", "DOGS", "T-shirts", "Men")] == [
        "Dog",
        "DOG",
        "T-shirt",
        "Man",
    ]
    assert plural("Knife") == "Knives"


def test_noun_phrases_use_the_one_singular():
    assert noun_phrases("Two ties and three pies on the table.") == [
        ("tie", 2),
        ("pie", 3),
        ("table", None),
    ]
    assert noun_phrases("two buses near the glasses") == [("bus", 2), ("glass", None)]
    assert head_phrase("Buses") == "bus"


@pytest.mark.parametrize(
    ("proposal", "subject", "count"),
    [
        ("two ties on a rack", "tie", 2),
        ("three pies", "pie", 3),
        ("two buses", "bus", 2),
        ("two knives", "knife", 2),
        ("four women", "woman", 4),
    ],
)
def test_fallback_claims_ask_the_detector_for_the_singular(proposal, subject, count):
    claims = fallback_claims([proposal])
    subjects = {c.subject for c in claims}
    assert subject in subjects
    # nothing mangled by a second singular: "ty", "py", "buse", "knive"
    assert subjects <= {subject, "rack"}
    counted = [c for c in claims if c.kind == "count"]
    assert [(c.subject, c.count) for c in counted] == [(subject, count)]
    many = proposal.split(maxsplit=1)[1].split()[0]
    assert counted[0].text == f"There are {count} {many}."
    assert counted[0].question == f"Are there {count} {many} in the image?"


def test_fallback_claims_from_bare_content_words():
    subjects = [c.subject for c in fallback_claims(["ties pies buses"])]
    assert subjects == ["tie", "pie", "bus"]


def test_the_text_package_needs_no_torch():
    code = (
        "import sys, factcap.text.english, factcap.text.jsonrepair, factcap.text.synonyms; "
        "assert 'torch' not in sys.modules; "
        "assert not [m for m in sys.modules if m.startswith('factcap.') and "
        "m.split('.')[1] not in ('text', 'errors')], sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("many", "one"),
    [("corgis", "corgi"), ("zebus", "zebu"), ("broccolis", "broccoli"), ("tvs", "tv")],
)
def test_coco_names_round_trip(many, one):
    # found by checking every name in CHAIR's COCO table against inflect: singular(plural(w))
    # gave "corgis", "zebus", "broccolis", "tvs", so "two corgis" was no mention of a dog
    assert plural(one) == many and singular(many) == one
