"""A study's design: which rater judges which comparison, on which side. Pure and seeded.

A *unit* is one comparison to be judged: an item's image with the captions of a source pair
(every pair of the compared sources, for every item), or a *gold* unit, an attention check:
an image with its own caption (from one compared source, drawn at random) against the same
source's caption of a different image, whose right answer is known.

Each unit is judged by ``raters_per_item`` (K) distinct raters, and the loads are balanced:
the units (gold first, then the rest, each set shuffled) are laid out K times in a row and
dealt to the raters round-robin, so

* the K copies of a unit go to K distinct raters (K consecutive deals, K <= R raters);
* every rater's number of assignments differs from every other's by at most 1, and so does
  their number of gold assignments;
* each rater then sees their assignments in their own shuffled order, and each assignment
  puts the two captions on random sides.

The number of gold units is ``round(f / (1 - f) * real units)`` for ``gold_fraction`` f, so
gold makes up the fraction f of all assignments.

>>> items = [Item(f"i{n}", f"images/i{n}.jpg", {"a": f"A{n}.", "b": f"B{n}."}) for n in range(4)]
>>> d = plan(items, ["a", "b"], n_raters=3, raters_per_item=2, gold_fraction=0.2, seed=1)
>>> d.real_units, d.gold_units, [len(a) for _, a in d.raters]
(4, 1, [4, 3, 3])
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from factcap.errors import UsageError

GOLD_PAIR = "gold"


@dataclass(frozen=True, slots=True)
class Item:
    """An image of the study and its caption per compared source."""

    item_id: str
    image: str
    captions: dict[str, str]


@dataclass(frozen=True, slots=True)
class Unit:
    """One comparison to be judged K times: ``first``/``second`` are (source, caption);
    for gold, ``first`` is the image's own caption."""

    item: Item
    pair: str
    first: tuple[str, str]
    second: tuple[str, str]
    gold: bool = False


@dataclass
class Design:
    """The design: the source pairs, the raters (label, assignment dicts in the form
    :meth:`StudyStore.create <factcap.study.store.StudyStore.create>` takes) and counts."""

    pairs: list[tuple[str, str]]
    raters: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    real_units: int = 0
    gold_units: int = 0


def pair_key(a: str, b: str) -> str:
    """The ``pair`` column of a comparison of sources ``a`` and ``b``.

    >>> pair_key("final:detailed", "proposal:m")
    'final:detailed|proposal:m'
    """
    return f"{a}|{b}"


def check(
    sources: Sequence[str], n_raters: int, raters_per_item: int, gold_fraction: float
) -> None:
    """Usage errors for options no design can meet (checked before anything is read)."""
    if len(sources) < 2 or len(set(sources)) != len(sources):
        raise UsageError("--compare needs at least two different caption sources, e.g. A,B")
    if any("|" in s for s in sources):
        raise UsageError("a caption source name may not contain '|'")
    if raters_per_item < 1:
        raise UsageError(f"--raters-per-item must be at least 1, not {raters_per_item}")
    if n_raters < raters_per_item:
        raise UsageError(
            f"--raters {n_raters} is fewer than --raters-per-item {raters_per_item}: each "
            "comparison needs that many different raters"
        )
    if not 0.0 <= gold_fraction <= 0.5:
        raise UsageError(f"--gold-fraction must be from 0 to 0.5, not {gold_fraction}")


def _gold_units(
    items: Sequence[Item], sources: Sequence[str], count: int, rng: random.Random
) -> list[Unit]:
    """``count`` distinct attention checks, spread over the items (each item once before
    any item twice)."""
    units: list[Unit] = []
    seen: set[tuple[str, str, str]] = set()
    order: list[Item] = []
    misses = 0
    while len(units) < count:
        if misses > 50 * (count + len(items)):
            raise UsageError(
                f"too few different captions for {count} attention checks; lower --gold-fraction"
            )
        if not order:
            order = list(items)
            rng.shuffle(order)
        item = order.pop()
        source = rng.choice(list(sources))
        own = item.captions[source]
        others = [
            o
            for o in items
            if o.item_id != item.item_id
            and o.captions[source] != own
            and (item.item_id, source, o.captions[source]) not in seen
        ]
        if not others:
            misses += 1
            continue
        other = rng.choice(others)
        seen.add((item.item_id, source, other.captions[source]))
        units.append(
            Unit(item, GOLD_PAIR, (source, own), (source, other.captions[source]), gold=True)
        )
    return units


def plan(
    items: Sequence[Item],
    sources: Sequence[str],
    n_raters: int,
    raters_per_item: int,
    gold_fraction: float = 0.1,
    seed: int = 0,
) -> Design:
    """The balanced design of a study (see the module docstring); the same arguments give
    the same design."""
    check(sources, n_raters, raters_per_item, gold_fraction)
    if not items:
        raise UsageError("the study has no items")
    rng = random.Random(seed)
    pairs = list(combinations(sources, 2))
    real = [
        Unit(item, pair_key(a, b), (a, item.captions[a]), (b, item.captions[b]))
        for item in items
        for a, b in pairs
    ]
    n_gold = round(gold_fraction / (1.0 - gold_fraction) * len(real)) if gold_fraction else 0
    if n_gold and len(items) < 2:
        raise UsageError("attention checks need at least two images; pass --gold-fraction 0")
    gold = _gold_units(items, sources, n_gold, rng)
    rng.shuffle(gold)
    rng.shuffle(real)
    order = list(range(n_raters))
    rng.shuffle(order)
    dealt: list[list[Unit]] = [[] for _ in range(n_raters)]
    deal = 0
    for unit in gold + real:
        for _ in range(raters_per_item):
            dealt[order[deal % n_raters]].append(unit)
            deal += 1
    width = max(2, len(str(n_raters)))
    design = Design(pairs=pairs, real_units=len(real), gold_units=len(gold))
    for index, units in enumerate(dealt):
        rng.shuffle(units)
        design.raters.append((f"rater-{index + 1:0{width}d}", [_assignment(u, rng) for u in units]))
    return design


def _assignment(unit: Unit, rng: random.Random) -> dict[str, Any]:
    """One rater's copy of a unit, on random sides."""
    flip = rng.random() < 0.5
    left, right = (unit.second, unit.first) if flip else (unit.first, unit.second)
    return {
        "item_id": unit.item.item_id,
        "pair": unit.pair,
        "left_source": left[0],
        "right_source": right[0],
        "left_caption": left[1],
        "right_caption": right[1],
        "image": unit.item.image,
        "gold": unit.gold,
        "gold_answer": ("right" if flip else "left") if unit.gold else None,
    }
