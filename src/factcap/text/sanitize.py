"""Text from records made safe to show and to write: control and bidi characters removed.

Captions come from models, file names and ids from whoever wrote the results file; results
files travel between people. Before such text reaches a person (the HTML report, the study
page, a crowd platform's CSV) or a one-caption-per-file training folder, it goes through one
of these functions:

- :func:`display_text` drops the C0 and C1 control characters (tab and line breaks are kept,
  ``\\r\\n`` and ``\\r`` become ``\\n``) and every bidirectional formatting character
  (:data:`BIDI_CONTROLS`: the embeddings, overrides and isolates, the left-to-right,
  right-to-left and Arabic letter marks), which can make "evil" show as "live" or hide the
  real end of a file name;
- :func:`one_line` is :func:`display_text` with every run of white space (line breaks
  included) folded into one space, for a caption file that must stay one line;
- :func:`display_safe` applies :func:`display_text` to every string of a JSON-like value
  (dict keys included).

The text keeps its meaning: letters, digits, punctuation, emoji and right-to-left scripts
pass unchanged (their direction comes from the letters themselves, not from these marks).

>>> one_line("x\\n../../evil\\x00\\r\\n")
'x ../../evil'
>>> display_text("a file named \\u202egnp.exe")
'a file named gnp.exe'
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

#: The bidirectional formatting characters: LRE, RLE, PDF, LRO, RLO (U+202A-U+202E), LRI,
#: RLI, FSI, PDI (U+2066-U+2069), LRM, RLM (U+200E, U+200F) and ALM (U+061C).
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"

# C0 controls but tab and line feed, DEL, C1 controls but NEL (a line break), and the bidi
# formatting characters.
_DROP = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f" + BIDI_CONTROLS + "]")
_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x85\u2028\u2029]")

T = TypeVar("T")


def display_text(text: str) -> str:
    """``text`` without control or bidi formatting characters; tabs and line breaks kept
    (every line break as ``\\n``).

    >>> display_text("a\\x00b\\r\\nc\\u2028d\\x9be\\u2066f\\u2069")
    'ab\\nc\\ndef'
    >>> display_text("שלום, world")
    'שלום, world'
    """
    return _DROP.sub("", _LINE_BREAKS.sub("\n", text))


def one_line(text: str) -> str:
    """:func:`display_text` on one line: white space runs (line breaks included) become one
    space, and none is left at either end.

    >>> one_line("  A cat\\n\\non a\\tmat.\\u2029 ")
    'A cat on a mat.'
    """
    return " ".join(display_text(text).split())


def display_safe(value: T) -> T:
    """``value`` with :func:`display_text` applied to every string inside it (dict keys
    and values, list and tuple items); other values are returned as they are.

    >>> display_safe({"id\\u202e": ["a\\x1bb", 1, None], "n": 2.5})
    {'id': ['ab', 1, None], 'n': 2.5}
    """
    return _safe(value)  # type: ignore[no-any-return]


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return display_text(value)
    if isinstance(value, dict):
        return {_safe(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_safe(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_safe(v) for v in value)
    return value
