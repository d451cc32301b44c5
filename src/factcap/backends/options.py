"""Option checking shared by every backend that takes ``**options``; torch-free.

Unknown option names raise :class:`TypeError`, bad values :class:`ValueError`, both before any
weights are loaded; the registry turns either into a ``ConfigError``.

>>> opts = take_options("Demo", {"max_new_tokens": 8}, {"max_new_tokens": 40, "prompt": None})
>>> opts
{'max_new_tokens': 8, 'prompt': None}
>>> check_token_counts("Demo", opts["max_new_tokens"], 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def take_options(owner: str, given: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict:
    """``defaults`` updated with ``given``; an option name not in ``defaults`` is a TypeError.

    >>> take_options("X", {"a": 2}, {"a": 1, "b": 0})
    {'a': 2, 'b': 0}
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(
            f"{owner} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(defaults)) or 'none'}"
        )
    return {**defaults, **given}


def check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an integer (not a bool) ``>= minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def check_token_counts(owner: str, max_new_tokens: Any, min_new_tokens: Any) -> None:
    """Raise ValueError unless ``1 <= max_new_tokens`` and ``0 <= min_new_tokens``."""
    check_int(owner, "max_new_tokens", max_new_tokens, 1)
    check_int(owner, "min_new_tokens", min_new_tokens, 0)


def check_text(
    owner: str, name: str, value: Any, *, optional: bool = False, nonempty: bool = False
) -> None:
    """Raise ValueError unless ``value`` is a string (non-blank when ``nonempty``), or None
    when ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str) or (nonempty and not value.strip()):
        kind = "a non-empty string" if nonempty else "a string"
        kind += " or None" if optional else ""
        raise ValueError(f"{owner}: {name} must be {kind}, got {value!r}")
