"""Attribute value sets (colour, size, material) and the value a claim states.

An attribute claim ("The cup is red.") is checked against its alternatives ("Is the cup
blue?", ...): the values of the same set. :data:`VALUE_SETS` are the shipped sets; a config
may replace any of them (``verify.value_sets``) with its world's values (the shapes world
knows six colours and two sizes).

>>> stated_value("The red circle is small.", "red circle", VALUE_SETS)
('size', 'small')
>>> stated_value("Is the mug made of glass?", "mug", VALUE_SETS)
('material', 'glass')
>>> with_value("Is the red circle small?", "small", "large")
'Is the red circle large?'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

#: The shipped value sets: each attribute's values, the most common first.
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "colour": (
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
        "gray",
    ),
    "size": ("small", "large"),
    "material": ("wooden", "metal", "plastic", "glass", "stone", "fabric", "leather", "paper"),
}

#: Words that mean a set's value, mapped to it ("grey" is "gray", "big" is "large").
SYNONYMS: dict[str, str] = {
    "grey": "gray",
    "big": "large",
    "tiny": "small",
    "little": "small",
    "wood": "wooden",
    "metallic": "metal",
}


def _word(value: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(value)}\b", re.I)


def stated_value(
    text: str, subject: str, value_sets: Mapping[str, Sequence[str]]
) -> tuple[str, str] | None:
    """The (attribute, value) that ``text`` states of ``subject``: a value of some set that
    ``text`` holds outside the subject phrase ("red" in "red circle" is the subject's, not the
    claim's). None when it states none or several (not one value to check).

    >>> stated_value("The circle is big.", "circle", VALUE_SETS)
    ('size', 'large')
    >>> stated_value("The red circle is on the left.", "red circle", VALUE_SETS) is None
    True
    """
    rest = re.sub(re.escape(subject), " ", text, flags=re.I) if subject else text
    found: list[tuple[str, str]] = []
    for attribute, values in value_sets.items():
        for value in values:
            if any(_word(w).search(rest) for w in value_words(value)):
                found.append((attribute, value))
    return found[0] if len(found) == 1 else None


def value_words(value: str) -> list[str]:
    """``value`` and the words that mean it.

    >>> value_words("large")
    ['large', 'big']
    """
    return [value] + [w for w, v in SYNONYMS.items() if v == value]


def with_value(text: str, old: str, new: str) -> str:
    """``text`` with the value ``old`` (or a synonym of it) replaced by ``new``, keeping an
    initial capital.

    >>> with_value("Big dogs.", "large", "small")
    'Small dogs.'
    """
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, value_words(old))) + r")\b", re.I)

    def swap(m: re.Match[str]) -> str:
        return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

    return pattern.sub(swap, text)


def alternatives(value: str, values: Sequence[str], most: int) -> list[str]:
    """Up to ``most`` other values of ``value``'s set, in the set's order.

    >>> alternatives("red", VALUE_SETS["colour"], 3)
    ['orange', 'yellow', 'green']
    """
    return [v for v in values if v != value][:most]
