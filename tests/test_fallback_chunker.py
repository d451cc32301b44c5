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

from factcap.pipeline.parsing import fallback_claims
from factcap.schema import Claim

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
        f"{s}×{k}"
        for s, k in counted
        if not any(_ok(s, e) and n == k for e, n in counts.items())
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


def test_held_out_captions_come_out_right():
    assert len(HELD_OUT) >= 25
    report = {caption: score(caption, subjects, counts) for caption, subjects, counts in HELD_OUT}
    misses = {c: r["misses"] for c, r in report.items() if r["misses"]}
    wrong = {c: r["wrong"] for c, r in report.items() if r["wrong"]}
    dupes = {c: r["dupes"] for c, r in report.items() if r["dupes"]}
    assert sum(len(m) for m in misses.values()) <= 1, misses
    assert not wrong, wrong
    assert not dupes, dupes
