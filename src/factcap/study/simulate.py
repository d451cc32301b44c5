"""Scripted raters with known preferences, voting through :class:`StudyStore`: a check that
``factcap study results`` recovers what was put in (the README's simulated study, the tests).

>>> import tempfile
>>> from factcap.study.design import Item, plan
>>> items = [Item(f"i{n}", f"images/i{n}.jpg", {"A": f"a{n}", "B": f"b{n}"}) for n in range(40)]
>>> d = plan(items, ["A", "B"], n_raters=4, raters_per_item=3, gold_fraction=0.1, seed=0)
>>> store = StudyStore.create(tempfile.mkdtemp(), {"sources": ["A", "B"],
...     "pairs": [["A", "B"]]}, d.raters)
>>> simulate(store, {"A|B": (0.7, 0.1)}, careless=["rater-02"], seed=0)
132
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping

from factcap.study.store import CHOICES, StudyStore

#: Chances (first source wins, tie) for a pair without a stated preference.
NO_PREFERENCE = (0.45, 0.1)


def simulate(
    store: StudyStore,
    prefer: Mapping[str, tuple[float, float]],
    careless: Collection[str] = (),
    seed: int = 0,
    gold_accuracy: float = 0.97,
) -> int:
    """Every rater answers every assignment; returns the number of votes.

    ``prefer`` maps a pair (``"A|B"``) to (chance A is chosen, chance of ``same``); B gets
    the rest. A careful rater answers per ``prefer`` and gets a gold item right with chance
    ``gold_accuracy``; a rater whose label is in ``careless`` picks left, right or same at
    random everywhere (and so fails the gold checks).
    """
    rng = random.Random(seed)
    count = 0
    for rater in store.raters():
        sloppy = rater.label in careless
        for a in store.assignments(rater.token):
            if a.choice is not None:
                continue
            if sloppy:
                choice = rng.choice(CHOICES)
            elif a.gold:
                wrong = "left" if a.gold_answer == "right" else "right"
                choice = a.gold_answer if rng.random() < gold_accuracy else wrong
            else:
                first, _ = a.pair.split("|", 1)
                p_first, p_tie = prefer.get(a.pair, NO_PREFERENCE)
                draw = rng.random()
                if draw < p_tie:
                    choice = "same"
                else:
                    chose_first = draw < p_tie + p_first
                    first_side = "left" if a.left_source == first else "right"
                    other_side = "right" if first_side == "left" else "left"
                    choice = first_side if chose_first else other_side
            store.vote(rater.token, a.id, choice, elapsed_ms=rng.randint(2000, 9000))
            count += 1
    return count
