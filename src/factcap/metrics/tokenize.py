"""Caption tokenisation as pycocoevalcap does it, in pure Python (no Java).

pycocoevalcap runs every caption through Stanford CoreNLP 3.4.1's ``PTBTokenizer``
(``-preserveLines -lowerCase``), then drops the tokens listed in :data:`PUNCTUATIONS` and
joins the rest with single spaces. BLEU, ROUGE-L and CIDEr-D then score those strings.

:func:`ptb_tokens` is an **approximation** of that Java lexer: a longest-match scanner over
the subset of its rules that captions meet (words, numbers, hyphenated words, contractions
``n't 's 'm 're 've 'll 'd``, quotes, brackets, abbreviations such as ``Mr.`` ``St.``
``U.S.`` ``a.m.``, ellipses, dashes, currency and other symbols, URLs, e-mail addresses,
``cannot`` → ``can not``, ``gonna`` → ``gon na``). It matches the Java tokenizer's output on
typical English captions (checked against it on a hundred captions, and on random strings
dense with punctuation, where about 2 in 100 differ); on rare inputs it can differ (fractions
written with a space such as ``3 1/2``, phone numbers, emoticons like ``;)``, punctuation run
into URLs). Like Java, it drops characters it cannot tokenise (emoji). Lower-casing is
Python's :meth:`str.lower` (Java's ``toLowerCase(Locale.ENGLISH)`` agrees on ordinary text).

:func:`tokenize` gives what pycocoevalcap's ``PTBTokenizer.tokenize`` gives for one caption:
lower-case tokens without the :data:`PUNCTUATIONS`, joined by single spaces. Note that, as
in pycocoevalcap, brackets survive as ``-lrb-``/``-rrb-`` (its punctuation list has them in
upper case, the tokenizer lower-cases them) and so do ``?!``, ``!!`` and symbols like ``&``.

>>> tokenize("A man's red hat (on the table), isn't it?")
"a man 's red hat -lrb- on the table -rrb- is n't it"
>>> ptb_tokens('Two dogs play "fetch" at 5 p.m. in the U.S.')
['two', 'dogs', 'play', '``', 'fetch', "''", 'at', '5', 'p.m.', 'in', 'the', 'u.s.']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

__all__ = ["PUNCTUATIONS", "ptb_tokens", "tokenize", "tokenize_all"]

#: Tokens pycocoevalcap removes after tokenisation (``tokenizer/ptbtokenizer.py``).
PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-"]
    + [".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Character classes (Java's [:letter:] / [:digit:] through Python's Unicode classes).
_NUMERIC = r"[\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff]"
_LET = rf"(?:(?!{_NUMERIC})[^\W\d_]|[\u00ad\u0300-\u036f])"
_LETDIG = r"[^\W_]"
_APOS = r"['\u0092\u2019]"
_APOSX = r"['\u0092\u2019\u0091\u2018\u201b]"
_WORD = rf"{_LET}+(?:[.!?]{_LET}+)*"
_ACRO = r"[A-Za-z](?:\.[A-Za-z])+"

# Abbreviations the Java lexer keeps with their period (literal parts match any case).
_ABMONTH = r"(?i:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)"
_ABDAYS = r"(?i:mon|tues?|wed|thu(?:rs)?|fri)"
_ABSTATE = (
    r"(?i:ala|ariz|calif|colo|conn|dak|del|fla|ga|ind|kans?|ky|la|md|mich|minn|mo|mont|neb"
    r"|nev|okla|pa|penn|tenn|tex|va|vt|wisc?|wyo)|A(?i:rk)|I(?i:ll)|M(?i:ass|iss)|O(?i:re)"
    r"|W(?i:ash)"
)
_ABCOMP = r"(?i:inc|cos?|corp|pp?tys?|ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys)"
_ABNUM = r"(?i:prop|ph|tel|est|ext|sq|ft)"
_ABPTIT = r"(?i:jr|sr|bros|(?:ed|ph)\.d|blvd|rd|esq)"
_ABTITLE = (
    r"(?i:mr|mrs|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt"
    r"|cpl|pvt|mt|capt|ste?|ave|pres|lieut|hon|brig|c?o?mdr|pfc|spc|supts?|det)|M(?i:iss)"
)
_ABCOMP2 = r"(?i:invt|elec|natl|m[ft]g)"
_ABBREV1 = rf"(?:{_ABMONTH}|{_ABDAYS}|{_ABSTATE}|{_ABCOMP}|{_ABNUM}|{_ABPTIT}|(?i:etc|al|seq))\."
_ABBREV4 = rf"(?:{_ACRO}|[A-Za-z]|{_ABTITLE}|(?i:vs|alex|wm|jos|cie|a\.k\.a|cf|treas)|{_ABCOMP2})"

_MISC_SYMBOLS = (
    r"[+%&~^|\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7"
    r"\u2016\u2017\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f"
    r"\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f"
    r"\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)
_CURRENCY = {
    "\u00a2": "cents",
    "\u00a3": "#",
    "\u00a4": "$",
    "\u0080": "$",
    "\u20a0": "$",
    "\u20ac": "$",
}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}


def _quote(text: str, left: bool) -> str:
    """PTB ("LaTeX") quotes: `` and ` open, '' and ' close."""
    text = text.replace("'", "`").replace('"', "``") if left else text.replace('"', "''")
    for chars, repl in (("\u0091\u2018\u201b\u2039", "`"), ("\u0092\u2019\u203a", "'")):
        text = re.sub(f"[{chars}]", repl, text)
    return re.sub("[\u0093\u201c\u00ab]", "``", re.sub("[\u0094\u201d\u00bb]", "''", text))


def _same(text: str) -> str:
    return text


# (pattern, what the token becomes): a subset of PTBLexer's rules. A rule with trailing
# context (Java's r1/r2) names r1 "tok" (or "tok2", "tok3"): the whole match counts for the
# longest-match choice, only r1 is consumed. "again" marks an abbreviation that keeps its
# period and also gives it back as a token of its own. Ties go to the earlier rule (JFlex).
_RULES: list[tuple[str, Callable[[str], str]]] = [
    (r"(?P<tok>(?i:can))(?i:not)", _same),
    (
        r"(?P<tok>(?i:gon|wan))(?i:na)|(?P<tok2>(?i:got))(?i:ta)|(?P<tok3>(?i:lem|gim))(?i:me)",
        _same,
    ),
    (r"</?[A-Za-z!?][^>\r\n]*>", lambda t: t.replace(" ", "\u00a0")),
    (r"[\u0096\u0097\u2013\u2014\u2015]", lambda t: "--"),
    (r"(?i:&amp;)", lambda t: "&"),
    (rf"(?P<tok>{_WORD}){_APOS}(?:[msdMSD]|(?i:re|ve|ll))", _same),
    (rf"(?P<tok>[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*)(?i:n){_APOSX}(?i:t)", _same),
    (_WORD, lambda t: t.replace("\u00ad", "")),
    (
        rf"{_APOS}n{_APOS}?|[lLdDjJ]{_APOS}|(?i:dunkin|somethin|ol){_APOS}|{_APOS}(?i:em)"
        rf"|[A-HJ-XZn]{_APOSX}{_LET}{{2}}{_LET}*|{_APOS}[2-9]0s|{_APOS}(?i:till?)"
        rf"|{_LET}+[aeiouyAEIOUY]{_APOSX}[aeiouA-Z]{_LET}*|{_APOS}(?i:cause)"
        r"|(?i:cont'd\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
        _same,
    ),
    (rf"(?P<tok>[yY]{_APOS}){_LET}", _same),
    (r"(?P<tok>'[tT])(?i:is|was)\b", _same),
    (r"https?://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]", _same),
    (
        r"(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}"
        r"|(?:[a-z]+\.)+(?:com|net|org|edu))(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?",
        _same,
    ),
    (
        r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0]*@(?:[^ \t\n\f\r\"<>|().\u00a0]+\.)*"
        r"[^ \t\n\f\r\"<>|().\u00a0]+",
        _same,
    ),
    (rf"@[a-zA-Z_][a-zA-Z_0-9]*|#{_WORD}", _same),
    (rf"(?P<tok>{_APOS}(?:[msdMSD]|(?i:re|ve|ll)))[^A-Za-z]", lambda t: _quote(t, False)),
    (rf"(?i:n){_APOSX}(?i:t)", lambda t: _quote(t, False)),
    (r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}", _same),
    (r"[-+]?(?:\d*(?:[.:,\u00ad\u066b\u066c]\d+)+|\d+)", lambda t: t.replace("\u00ad", "")),
    (r"\d{1,4}(?:\\?/|\u2044)\d{1,4}", _same),
    (r"[\u00bc\u00bd\u00be\u2153]", lambda t: _FRACTIONS[t]),
    (r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:pro|anti)-", _same),
    (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", _same),
    (r"[A-Z]*\$|#", _same),
    (
        r"[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
        lambda t: _CURRENCY.get(t, t),
    ),
    (rf"(?P<again>{_ABBREV1})[ \t\n\u00a0](?:\s|[A-Z]|<)", _same),
    (_ABBREV1, _same),
    (r"(?P<tok>(?i:nos?)\.)[ \t\u00a0]?\d", _same),
    (rf"{_ABBREV4}\.", _same),
    (_ACRO, _same),
    (r"(?P<tok>'\d\d)\s", _same),
    (rf"{_WORD}\.(?=[,;:\u3001])", _same),
    (r'(?P<tok>")[A-Za-z0-9$]', lambda t: _quote(t, True)),
    (r'"', lambda t: _quote(t, False)),
    (r"[<\[>\]{}()]", lambda t: _BRACKETS.get(t, t)),
    (r"-+", lambda t: "--" if 3 <= len(t) <= 4 else t),
    (r"\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\u0085\u2026]", lambda t: "..."),
    (r"@+|#+|_+|\*+", _same),
    (
        r"[,;:\u3001]|[?!]+|[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]|=|/",
        _same,
    ),
    (
        r"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:[A-Za-z0-9\u00ad]+|"
        rf"{_ACRO}\.))+",
        lambda t: t.replace("\u00ad", ""),
    ),
    (
        rf"(?:[dDoOlL]{_APOSX}{_LETDIG})?{_LETDIG}+"
        rf"(?:[-_\u058a\u2010\u2011](?:[dDoOlL]{_APOSX}{_LETDIG})?{_LETDIG}+)*",
        _same,
    ),
    (r"[A-Z]+(?:(?:[+&]|&amp;)[A-Z]+)+", lambda t: t.replace("&amp;", "&")),
    (r"(?P<tok>')[A-Za-z][^ \t\n\r\u00a0]", lambda t: _quote(t, True)),
    (rf"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))", lambda t: _quote(t, False)),
    (
        r"'|''|[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f"
        r"\u2039\u203a\u00ab\u00bb]{1,2}",
        lambda t: _quote(t, False),
    ),
    (r"<<|>>", _same),
    (_MISC_SYMBOLS, _same),
]
_COMPILED = [(re.compile(p), f) for p, f in _RULES]
_SKIP = re.compile(r"[\s\u00a0\u2000-\u200a\u3000\u200b\u200e\u200f\ufeff\x00\x7f]+")
_PLAIN = re.compile(r"[A-Za-z]+(?=[\s]|\Z)|[0-9]+(?=[\s]|\Z)")
_SPECIAL_WORDS = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})


def _next_token(text: str, pos: int) -> tuple[str, int] | None:
    """The longest rule match at ``pos``: (token, end of the consumed text), or None."""
    best: tuple[int, str, int] | None = None
    for pattern, convert in _COMPILED:
        m = pattern.match(text, pos)
        if m is None or m.end() == pos or (best is not None and m.end() <= best[0]):
            continue
        if "again" in pattern.groupindex:  # the token keeps its period, which is read again
            best = (m.end(), convert(m.group("again")), m.end("again") - 1)
            continue
        groups = [g for g in ("tok", "tok2", "tok3") if g in pattern.groupindex]
        end = next((m.end(g) for g in groups if m.group(g) is not None), m.end())
        best = (m.end(), convert(text[pos:end]), end)
    return None if best is None else (best[1], best[2])


def ptb_tokens(text: str) -> list[str]:
    """``text`` split into lower-case PTB tokens, punctuation included (see module doc).

    >>> ptb_tokens("It's a black-and-white photo... of U.S. cars!")
    ['it', "'s", 'a', 'black-and-white', 'photo', '...', 'of', 'u.s.', 'cars', '!']
    """
    tokens: list[str] = []
    pos, size = 0, len(text)
    while pos < size:
        skip = _SKIP.match(text, pos)
        if skip:
            pos = skip.end()
            continue
        plain = _PLAIN.match(text, pos)
        if plain and plain.group().lower() not in _SPECIAL_WORDS:
            tokens.append(plain.group())
            pos = plain.end()
            continue
        found = _next_token(text, pos)
        if found is None:  # a character Java cannot tokenise either: dropped, as it does
            pos += 1
            continue
        token, pos = found
        tokens.append(token)
    return [t.lower() for t in tokens]


def tokenize(caption: str) -> str:
    """One caption as pycocoevalcap's ``PTBTokenizer`` returns it: lower-case tokens without
    :data:`PUNCTUATIONS`, joined by single spaces ("" when nothing is left).

    >>> tokenize("A dog -- or two -- runs; it's fast!!")
    "a dog or two runs it 's fast !!"
    """
    return " ".join(t for t in ptb_tokens(caption.replace("\n", " ")) if t not in PUNCTUATIONS)


def tokenize_all(captions: Iterable[str]) -> list[str]:
    """:func:`tokenize` over many captions, in order.

    >>> tokenize_all(["A cat.", "Two DOGS!"])
    ['a cat', 'two dogs']
    """
    return [tokenize(c) for c in captions]
