"""Short answers to questions about an image: yes/no questions, normalising, matching.

Shared by the pipeline's answer check (:mod:`factcap.pipeline.question`) and evaluation's
question-guided accuracy (:mod:`factcap.metrics.question_accuracy`), so both read an answer
the same way.

- A **yes/no question** starts with an auxiliary verb ("Is", "Are", "Does", "Can", "Has",
  ...) and offers no choice ("Is it red or blue?" is not one).
- An answer is **normalised** by lower-casing, turning every character that is not a letter,
  digit or apostrophe into a space, dropping the articles "a", "an", "the", writing number
  words as digits ("two" → "2") and collapsing spaces (the usual VQA answer normalisation,
  slightly simplified).
- An answer is **unknown** when it is empty after normalising or says the text does not tell
  ("unknown", "not stated", "cannot tell", ...).
- An LLM's **short answer** (:func:`short_answer`) is the first line of its reply with an
  ``Answer:`` label, wrapping quotes or backticks and a final full stop taken off; None when
  it is unknown.
- A predicted answer **matches** a reference answer when, both normalised, they are equal;
  or when the reference is yes or no and the prediction's first word is the same word; or
  when the reference is neither and occurs in the prediction as whole words ("red" in "dark
  red") and the prediction has no negation ("not", "no", "never", "n't") before it. Any
  reference of several matching is enough.

>>> normalise_answer("  Two  Cats! ")
'2 cats'
>>> is_yes_no("Is the cat asleep?"), is_yes_no("Is the cat black or white?"), is_yes_no("What is it?")
(True, False, False)
>>> yes_no("Yes, it is."), yes_no("Nope")
('yes', None)
>>> answers_match("a red sofa", ["red"]), answers_match("not red", ["red"]), answers_match("No.", ["yes"])
(True, False, False)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from factcap.text.english import NUMBER_WORDS

#: Words that open a yes/no question.
AUXILIARIES = frozenset(
    """is are was were am do does did can could will would should shall may might must has
    have had isn't aren't wasn't weren't don't doesn't didn't can't couldn't won't wouldn't
    shouldn't hasn't haven't""".split()
)
#: What an answer says when the text does not tell (compared after normalising).
UNKNOWN_ANSWERS = frozenset(
    {
        "unknown",
        "not stated",
        "not mentioned",
        "not specified",
        "not known",
        "unclear",
        "cannot tell",
        "can't tell",
        "cannot be determined",
        "cannot determine",
        "caption does not say",
        "none",
        "n/a",
        "na",
    }
)
_ARTICLES = frozenset({"a", "an", "the"})
_NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "neither", "nor"})
_NON_WORD = re.compile(r"[^\w']+")


def normalise_answer(text: str) -> str:
    """``text`` normalised for comparing answers (module docstring)."""
    words = []
    for word in _NON_WORD.sub(" ", str(text).lower().replace("_", " ")).split():
        word = word.strip("'")
        if not word or word in _ARTICLES:
            continue
        number = NUMBER_WORDS.get(word)
        words.append(str(number) if isinstance(number, int) else word)
    return " ".join(words)


def is_yes_no(question: str) -> bool:
    """Whether ``question`` asks for yes or no (module docstring)."""
    words = str(question).strip().lower().split()
    return bool(words) and words[0].strip("\"'") in AUXILIARIES and " or " not in f" {question} "


def yes_no(answer: str) -> str | None:
    """``"yes"`` or ``"no"`` when the answer's first word is one of them, else None."""
    words = normalise_answer(answer).split()
    return words[0] if words and words[0] in ("yes", "no") else None


def is_unknown(answer: str | None) -> bool:
    """Whether ``answer`` is missing or says the text does not tell."""
    if answer is None:
        return True
    norm = normalise_answer(answer)
    return not norm or norm in UNKNOWN_ANSWERS or norm.startswith(("unknown", "not stated"))


_LABEL = re.compile(r"^\s*(final\s+)?(short\s+)?answer\s*:\s*", re.I)


def short_answer(reply: str | None, max_chars: int = 200) -> str | None:
    """An LLM's short answer from its reply (module docstring).

    >>> short_answer('Answer: "A grey cat."\\nIt sits on the sofa.'), short_answer("Unknown.")
    ('A grey cat', None)
    """
    if not isinstance(reply, str):
        return None
    lines = [line.strip() for line in reply.strip().strip("`").splitlines() if line.strip()]
    text = _LABEL.sub("", lines[0]) if lines else ""
    for _ in range(2):
        text = text.strip().rstrip(".").strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
            text = text[1:-1]
    text = " ".join(text.split())[:max_chars]
    return None if is_unknown(text) else text


def answers_match(predicted: str | None, references: Sequence[str]) -> bool:
    """Whether ``predicted`` matches any of ``references`` (module docstring)."""
    if is_unknown(predicted):
        return False
    pred = normalise_answer(str(predicted))
    words = pred.split()
    for reference in references:
        ref = normalise_answer(reference)
        if not ref:
            continue
        if pred == ref:
            return True
        if ref in ("yes", "no"):
            if words and words[0] == ref:
                return True
            continue
        if f" {ref} " in f" {pred} ":
            before = f" {pred} ".split(f" {ref} ", 1)[0].split()
            if not any(w in _NEGATIONS or w.endswith("n't") for w in before):
                return True
    return False
