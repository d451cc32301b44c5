"""Caption styles as data: one text file per style, with a little front matter.

A style file is the prompt paragraph that tells the LLM what shape the final caption takes,
after an optional front matter block::

    ---
    description: a comma-separated text-to-image prompt
    pieces: phrases        # how refuted content is cut: whole sentences, or comma phrases
    fallback: all          # the fallback caption: all usable sentences, or the first one
    ---
    Write a prompt for a text-to-image model ...

``added_by: instruction`` (or the older ``needs_instruction: true``) marks a style that takes
the user's free ``--instruction`` (its prompt holds ``{instruction}``); it is added whenever
an instruction is given and is not chosen with ``--style``. In the same way ``added_by:
question`` styles are written when an item has a question, and ``added_by: regions`` styles
describe one region of an image (``--regions``). The shipped styles are the files in ``factcap/prompts/styles/``:
adding one there is adding a style. A config adds its own with ``custom_styles: {name:
file}`` and replaces a shipped style's prompt with ``prompts: {style_<name>: file}``.

>>> styles = style_registry()
>>> sorted(selectable(styles))
['alt', 'detailed', 'fused', 'short', 't2i']
>>> styles["t2i"].pieces, styles["short"].fallback
('phrases', 'first')
>>> parse_style("mine", "---\\npieces: phrases\\n---\\nList the objects.\\n").prompt
'List the objects.\\n'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

from factcap.errors import ConfigError

#: The style that carries a free instruction (``--instruction``).
INSTRUCTION = "instruction"
PIECES = ("sentences", "phrases")
FALLBACKS = ("all", "first")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
_FIELDS = ("description", "pieces", "fallback", "needs_instruction", "added_by")
#: The features that add a style of their own (never chosen with ``--style``).
ADDED_BY = ("instruction", "question", "regions")


@dataclass(frozen=True, slots=True)
class Style:
    """One caption style: its prompt paragraph and how its captions are cut and filled in."""

    name: str
    prompt: str
    description: str = ""
    pieces: str = "sentences"
    fallback: str = "all"
    added_by: str | None = None
    source: str = "shipped"

    @property
    def needs_instruction(self) -> bool:
        """Whether this is the free instruction's style."""
        return self.added_by == INSTRUCTION


def parse_style(name: str, text: str, source: str = "shipped") -> Style:
    """A :class:`Style` from a style file's text (front matter optional)."""
    fields: dict[str, str] = {}
    front = _FRONT.match(text)
    body = text[front.end() :] if front else text
    where = f"style {name!r} ({source})"
    for line in front.group(1).splitlines() if front else []:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or key not in _FIELDS:
            raise ConfigError(f"{where}: unknown front matter line {line!r}; keys: {_FIELDS}")
        fields[key] = value.strip()
    pieces = fields.get("pieces", "sentences")
    fallback = fields.get("fallback", "all")
    flag = fields.get("needs_instruction", "false").lower()
    added_by = fields.get("added_by") or (INSTRUCTION if flag == "true" else None)
    if (
        pieces not in PIECES
        or fallback not in FALLBACKS
        or flag not in ("true", "false")
        or (added_by is not None and added_by not in ADDED_BY)
    ):
        raise ConfigError(
            f"{where}: pieces must be one of {PIECES}, fallback one of {FALLBACKS}, "
            f"needs_instruction true or false, added_by one of {ADDED_BY}"
        )
    if not body.strip():
        raise ConfigError(f"{where}: the prompt is empty")
    return Style(name, body, fields.get("description", ""), pieces, fallback, added_by, source)


@cache
def shipped_styles() -> dict[str, Style]:
    """The styles shipped with factcap, by name (the files in ``factcap/prompts/styles``)."""
    folder = resources.files("factcap.prompts") / "styles"
    found = sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))
    return {n: parse_style(n, (folder / f"{n}.txt").read_text("utf-8")) for n in found}


def _read(name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise ConfigError(f"style file for {name!r} cannot be read: {err}") from None


def style_registry(
    custom: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
) -> dict[str, Style]:
    """Every style a config can use: the shipped ones, ``custom`` (name → style file), and
    shipped prompts replaced through ``overrides`` (``style_<name>`` → file; a file without
    front matter keeps the shipped style's)."""
    styles = dict(shipped_styles())
    for name, path in (custom or {}).items():
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"custom style name {name!r}: use lower-case letters, digits, _")
        if name in styles:
            raise ConfigError(
                f"custom style {name!r} is a shipped style: replace its prompt with "
                f"prompts: {{style_{name}: FILE}} instead"
            )
        styles[name] = parse_style(name, _read(name, path), path)
    for key, path in (overrides or {}).items():
        name = key.removeprefix("style_")
        if key.startswith("style_") and name in styles:
            text = _read(key, path)
            if _FRONT.match(text):
                styles[name] = parse_style(name, text, path)
            else:
                styles[name] = replace(styles[name], prompt=text, source=path)
    return styles


def selectable(styles: Mapping[str, Style]) -> list[str]:
    """The names a user may ask for with ``--style`` (not those a feature adds)."""
    return [n for n, s in styles.items() if s.added_by is None]


def added_by(styles: Mapping[str, Style], feature: str) -> list[str]:
    """The styles that ``feature`` (``instruction``, ``question``, ``regions``) adds."""
    return [n for n, s in styles.items() if s.added_by == feature]


#: Styles whose captions are one short line (a caption graph's ``short`` descriptions).
SHORT_STYLES = ("short", "alt")


def description_kind(style: str) -> str:
    """``short`` for a style of one short line, else ``detail``: how a caption graph (and
    the GBC export) labels an image description written in ``style``.

    >>> description_kind("alt"), description_kind("detailed")
    ('short', 'detail')
    """
    return "short" if style in SHORT_STYLES else "detail"
