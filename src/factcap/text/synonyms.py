"""Synonyms for caption metrics: WordNet read offline from disk, or a shipped COCO table.

**WordNet.** :class:`WordNet` reads the WordNet 3.x database files (``index.<pos>``,
``data.<pos>``, ``<pos>.exc``) straight from a directory; nothing is downloaded. Debian ships
them in the ``wordnet-base`` package (``/usr/share/wordnet``); NLTK's unzipped
``corpora/wordnet`` holds the same files. The directory is ``$FACTCAP_WORDNET`` when set, else
the first of :data:`WORDNET_DIRS` that holds the files. (NLTK's own reader is not used: it
needs a ``lexnames`` file Debian does not ship, and NLTK ≥ 3.9 refuses paths outside its data
roots.) Inflected words are reduced to their base forms the way WordNet's ``morphy`` does:
the exception lists first, then the suffix rules, keeping forms that are in the index.

**Synonyms** of a word are the lemma names of every synset of every base form of the word,
in all parts of speech (the definition CAPTURE uses, via NLTK's ``wordnet.synsets``), plus the
word itself; multi-word lemmas are written with spaces.

**Fallback.** Without WordNet, :func:`synonyms` uses the COCO synonym table of CHAIR
(``data/coco_synonyms.txt``, 80 categories): a word's synonyms are the words of its category,
found for the word as it is or its :func:`~factcap.text.english.singular`. That table knows
only COCO objects, so a metric using :func:`synonyms` says which source it used
(:func:`synonym_source`) — never silently.

>>> sorted(coco_synonyms()["couch"])[:3]
['chesterfield', 'couch', 'futon']
>>> are_synonyms("table", "dining table")  # whole words contained
True
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

from factcap.text.english import singular

#: Where WordNet's database files are looked for when ``$FACTCAP_WORDNET`` is not set.
WORDNET_DIRS: tuple[str, ...] = (
    "/usr/share/wordnet",  # Debian / Ubuntu: apt-get install wordnet-base
    "/usr/share/WordNet-3.0/dict",
    "/usr/local/share/wordnet",
    "/usr/local/WordNet-3.0/dict",
    "/usr/lib/wnres/dict",
    "~/nltk_data/corpora/wordnet",
    "/usr/share/nltk_data/corpora/wordnet",
    "/usr/local/share/nltk_data/corpora/wordnet",
)
ENV_VAR = "FACTCAP_WORDNET"
INSTALL_HINT = "apt-get install wordnet-base, or set FACTCAP_WORDNET to a WordNet dict directory"

_POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's morphological suffix rules (morph.c), per part of speech.
_SUFFIX_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def _key(word: str) -> str:
    """A word as WordNet's index spells it: lower case, underscores for spaces."""
    return "_".join(word.lower().split())


class WordNet:
    """The WordNet database in directory ``root``, read lazily (an index is parsed on first use,
    synsets are read from memory-mapped data files).

    A one-synset database in the real file format (``tests/test_metrics_capture.py`` checks a
    larger one, and the system's WordNet when one is installed):

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = Path(tmp.name)
    >>> _ = (root / "data.noun").write_text("00000000 06 n 02 couch 0 sofa 0 000 | a seat\\n")
    >>> _ = (root / "index.noun").write_text(
    ...     "couch n 1 0 1 0 00000000\\nsofa n 1 0 1 0 00000000\\n"
    ... )
    >>> sorted(WordNet(root).synonyms("couches")), WordNet(root).synonyms("unicorns")
    (['couch', 'couches', 'sofa'], {'unicorns'})
    >>> tmp.cleanup()
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()
        missing = [f for f in ("index.noun", "data.noun") if not (self.root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.root} is not a WordNet dict directory: no {missing[0]}")
        self._indexes: dict[str, dict[str, tuple[int, ...]]] = {}
        self._exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        self._data: dict[str, mmap.mmap | None] = {}
        self._lemmas: dict[tuple[str, int], tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return f"WordNet({str(self.root)!r})"

    def __getstate__(self) -> dict[str, str]:
        return {"root": str(self.root)}  # memory maps do not pickle; reopened on demand

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    def _index(self, pos: str) -> dict[str, tuple[int, ...]]:
        if pos not in self._indexes:
            table: dict[str, tuple[int, ...]] = {}
            path = self.root / f"index.{_POS_FILES[pos]}"
            if path.is_file():
                with path.open(encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        if line.startswith(" "):  # the licence header
                            continue
                        parts = line.split()
                        if len(parts) < 6:
                            continue
                        n = int(parts[2])
                        table[parts[0]] = tuple(int(o) for o in parts[len(parts) - n :])
            self._indexes[pos] = table
        return self._indexes[pos]

    def _exception_map(self, pos: str) -> dict[str, tuple[str, ...]]:
        if pos not in self._exceptions:
            table: dict[str, tuple[str, ...]] = {}
            path = self.root / f"{_POS_FILES[pos]}.exc"
            if path.is_file():
                with path.open(encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        parts = line.split()
                        if len(parts) >= 2:
                            table[parts[0]] = tuple(parts[1:])
            self._exceptions[pos] = table
        return self._exceptions[pos]

    def _data_file(self, pos: str) -> mmap.mmap | None:
        if pos not in self._data:
            path = self.root / f"data.{_POS_FILES[pos]}"
            mapped = None
            if path.is_file() and path.stat().st_size:
                with path.open("rb") as fh:
                    mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._data[pos] = mapped
        return self._data[pos]

    def lemmas(self, pos: str, offset: int) -> tuple[str, ...]:
        """The words of the synset at byte ``offset`` of ``data.<pos>`` (spaces, lower case)."""
        key = (pos, offset)
        if key not in self._lemmas:
            data = self._data_file(pos)
            words: list[str] = []
            if data is not None and 0 <= offset < len(data):
                end = data.find(b"\n", offset)
                fields = data[offset : end if end >= 0 else len(data)].decode("utf-8", "replace")
                parts = fields.split()
                # offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id ...] ...
                if len(parts) > 4 and parts[0].isdigit() and int(parts[0]) == offset:
                    count = int(parts[3], 16)
                    for i in range(count):
                        word = _ADJ_MARKER.sub("", parts[4 + 2 * i])
                        words.append(word.replace("_", " ").lower())
            self._lemmas[key] = tuple(dict.fromkeys(words))
        return self._lemmas[key]

    def base_forms(self, word: str, pos: str) -> list[str]:
        """WordNet's ``morphy``: the base forms of ``word`` as ``pos`` that are in the index
        (exception list, the word itself, then the suffix rules), in index spelling."""
        form = _key(word)
        index = self._index(pos)
        candidates = list(self._exception_map(pos).get(form, ()))
        candidates.append(form)
        for suffix, ending in _SUFFIX_RULES[pos]:
            if form.endswith(suffix) and len(form) > len(suffix):
                candidates.append(form[: len(form) - len(suffix)] + ending)
        return [c for c in dict.fromkeys(candidates) if c in index]

    def lemma(self, word: str, pos: str) -> str:
        """The shortest base form of ``word`` as ``pos`` (as NLTK's lemmatizer picks), or the
        word itself when WordNet does not know it; spaces, lower case."""
        forms = self.base_forms(word, pos)
        return min(forms, key=len).replace("_", " ") if forms else " ".join(word.lower().split())

    def has(self, word: str, pos: str) -> bool:
        """Whether ``word`` (after morphy) is in WordNet as ``pos`` (``n``, ``v``, ``a``, ``r``)."""
        return bool(self.base_forms(word, pos))

    def synsets(self, word: str, pos: str | None = None) -> list[tuple[str, int]]:
        """``(pos, offset)`` of every synset of ``word``'s base forms (all parts of speech
        unless ``pos`` is given)."""
        out: list[tuple[str, int]] = []
        for p in [pos] if pos else list(_POS_FILES):
            for form in self.base_forms(word, p):
                out.extend((p, offset) for offset in self._index(p)[form])
        return list(dict.fromkeys(out))

    def synonyms(self, word: str, pos: str | None = None) -> set[str]:
        """The lemma names of every synset of ``word``, plus the word itself."""
        found = {" ".join(word.lower().split())}
        for p, offset in self.synsets(word, pos):
            found.update(self.lemmas(p, offset))
        return found


def find_wordnet(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The WordNet directory to use: ``root``, else ``$FACTCAP_WORDNET``, else the first of
    :data:`WORDNET_DIRS` that holds ``index.noun``; None when there is none.

    >>> find_wordnet("/nonexistent") is None
    True
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or None
    candidates = [root] if root is not None else list(WORDNET_DIRS)
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if (path / "index.noun").is_file() and (path / "data.noun").is_file():
            return path
    return None


@lru_cache(maxsize=8)
def _open(root: str) -> WordNet:
    return WordNet(root)


def wordnet(root: str | os.PathLike[str] | None = None) -> WordNet | None:
    """The (cached) :class:`WordNet` of :func:`find_wordnet`, or None when none is installed."""
    path = find_wordnet(root)
    return _open(str(path)) if path else None


def synonym_source(root: str | os.PathLike[str] | None = None) -> str:
    """Says where :func:`synonyms` gets its answers, for a metric's ``info``.

    >>> synonym_source("/nonexistent").startswith("coco table")
    True
    """
    path = find_wordnet(root)
    if path:
        return f"wordnet ({path})"
    where = os.environ.get(ENV_VAR) if root is None else str(root)
    looked = f"{ENV_VAR}={where}" if where else "the usual places"
    return f"coco table: WordNet not found in {looked} ({INSTALL_HINT})"


# --- the COCO table -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _coco_rows() -> tuple[tuple[str, ...], ...]:
    text = (resources.files("factcap.text") / "data" / "coco_synonyms.txt").read_text("utf-8")
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            words = [" ".join(w.lower().split()) for w in line.split(",")]
            rows.append(tuple(dict.fromkeys(w for w in words if w)))
    return tuple(rows)


def coco_synonyms() -> dict[str, tuple[str, ...]]:
    """COCO category → the words naming it (the category first), from CHAIR's table."""
    return {row[0]: row for row in _coco_rows()}


@lru_cache(maxsize=1)
def coco_canonical() -> dict[str, str]:
    """Every word of the COCO table → its category (``"puppy"`` → ``"dog"``).

    >>> coco_canonical()["hot dog"], coco_canonical()["sofa"]
    ('hot dog', 'couch')
    """
    table: dict[str, str] = {}
    for row in _coco_rows():
        for word in row:
            table.setdefault(word, row[0])
    return table


def _coco_synonyms_of(word: str) -> set[str]:
    canonical = coco_canonical()
    norm = " ".join(word.lower().split())
    category = canonical.get(norm) or canonical.get(singular(norm))
    found = {norm}
    if category:
        found.update(coco_synonyms()[category])
    return found


def synonyms(word: str, root: str | os.PathLike[str] | None = None) -> set[str]:
    """The synonyms of ``word`` (a word or a multi-word phrase), the word included: from
    WordNet when it is installed (see the module docstring), else from the COCO table.

    >>> "sofa" in synonyms("couch")
    True
    """
    wn = wordnet(root)
    return wn.synonyms(word) if wn is not None else _coco_synonyms_of(word)


def _contains_words(longer: Iterable[str], shorter: Iterable[str]) -> bool:
    big, small = list(longer), list(shorter)
    n = len(small)
    return 0 < n <= len(big) and any(big[i : i + n] == small for i in range(len(big) - n + 1))


def are_synonyms(a: str, b: str, root: str | os.PathLike[str] | None = None) -> bool:
    """CAPTURE's synonym test: equal; or one's words are a contiguous run of the other's
    ("table" in "dining table"; CAPTURE tests characters, which would also match "cat" with
    "category"); or the two share a synonym (:func:`synonyms`).

    >>> are_synonyms("sofa", "couch"), are_synonyms("cat", "category")
    (True, False)
    """
    a_words, b_words = a.lower().split(), b.lower().split()
    if not a_words or not b_words:
        return False
    if a_words == b_words or _contains_words(a_words, b_words):
        return True
    if _contains_words(b_words, a_words):
        return True
    return bool(synonyms(" ".join(a_words), root) & synonyms(" ".join(b_words), root))
