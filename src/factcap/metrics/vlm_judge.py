"""VLM-as-judge rubric scores: a vision chat model (the ``judge`` role) grades each caption
against its image from 1 to 5 for ``accuracy`` (nothing stated that the image does not show),
``detail`` (how much of the image it covers) and ``overall``, with a one-sentence reason.

The prompt is the shipped template ``judge_rubric`` (``factcap/prompts/templates``); the
caption enters it only through :func:`factcap.prompts.quote_data`. The answer is parsed
tolerantly: JSON (``{"accuracy": 4, ...}``, repaired by :mod:`factcap.text.jsonrepair`) or
prose (``Accuracy: 4``; a lone ``Score: 4`` is the overall score).

**Probability-weighted scores.** Where the backend gives token probabilities (local logits,
a server's ``logprobs``), each value is the expected score under the model's distribution at
the token that carries the digit: ``sum(k * p_k) / sum(p_k)`` over the digits 1..5 among that
token's top alternatives (any spelling, e.g. ``"4"`` and ``" 4"``, summed), as G-Eval does;
else the parsed digit. The row's info says which (``vlm_judge.scoring``: ``logprobs``,
``parsed``, or ``mixed`` with ``scoring_by_value``). A value that is missing or outside 1..5
is NaN with the reason in :attr:`Score.failure` — never a default score.

A 3D asset is graded on one image: a grid of its views (:func:`view_grid`), and the prompt
says so.

>>> answer = '{"accuracy": 4, "detail": 2, "overall": 3, "reason": "Misses the sofa."}'
>>> read_rubric(answer)["values"]
{'judge_accuracy': 4.0, 'judge_detail': 2.0, 'judge_overall': 3.0}
>>> weighted_digit({"4": math.log(0.6), " 5": math.log(0.3), "3": math.log(0.1), "x": 0.0})
4.2
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from factcap.metrics.base import NAN, Metric, Sample, Score
from factcap.prompts import load_prompt, quote_data, read_override, render
from factcap.roles import Generation, TokenLogprobs
from factcap.text.jsonrepair import json_values

ASPECTS = ("accuracy", "detail", "overall")
VALUE_NAMES = tuple(f"judge_{a}" for a in ASPECTS)
LOW, HIGH = 1, 5
#: Other words a judge uses for an aspect (a lone "Score: 4" is the overall score).
ALIASES = {"overall": ("overall", "score", "rating")}
_NUMBER = r"(-?\d+(?:\.\d+)?)"
ASSET_NOTE = (
    "The image above is a grid of {n} views of one 3D object; the caption describes the object.\n\n"
)


def _aspect_pattern(word: str, alone: bool = False) -> re.Pattern[str]:
    # "accuracy": 4 | 'accuracy': "4" | Accuracy: 4 | **Accuracy** = 4/5 | accuracy - 4;
    # ``alone``: not after another word ("Accuracy score: 4" is no overall score)
    before = r"(?<![A-Za-z] )(?<![A-Za-z_])" if alone else ""
    return re.compile(
        rf"""{before}\b{word}\b[\s*"'_]*(?:score|rating)?[\s*"'_]*[:=\-][\s*"']*{_NUMBER}""", re.I
    )


_PATTERNS = {a: [_aspect_pattern(w, alone=w != a) for w in ALIASES.get(a, (a,))] for a in ASPECTS}
_REASON = re.compile(r"""["']?\breason\b["']?\s*[:=]\s*["']?([^"'\n]+)""", re.I)


@dataclass(slots=True)
class Found:
    """A number found in the answer for one aspect: its value and where its text is
    (``span`` = character offsets in the answer; None when it came from repaired JSON)."""

    value: float
    span: tuple[int, int] | None


def find_scores(answer: str) -> dict[str, Found]:
    """Each aspect's number in ``answer`` (first match in the text; else a key of recovered
    JSON), without range checks.

    >>> find_scores("Accuracy: 5. Detail: 2.")["detail"]
    Found(value=2.0, span=(21, 22))
    """
    found: dict[str, Found] = {}
    for aspect, patterns in _PATTERNS.items():
        for pattern in patterns:
            match = pattern.search(answer)
            if match:
                found[aspect] = Found(float(match.group(1)), match.span(1))
                break
    missing = [a for a in ASPECTS if a not in found]
    if missing:
        for value in json_values(answer):
            if not isinstance(value, dict):
                continue
            keys = {str(k).lower(): v for k, v in value.items()}
            for aspect in missing:
                for word in ALIASES.get(aspect, (aspect,)):
                    number = _number(keys.get(word))
                    if number is not None and aspect not in found:
                        found[aspect] = Found(number, None)
            break
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def find_reason(answer: str) -> str | None:
    """The judge's one-sentence reason (JSON ``reason``, or ``Reason: ...`` prose).

    >>> find_reason('{"overall": 2, "reason": "It invents a dog."}')
    'It invents a dog.'
    """
    for value in json_values(answer):
        if isinstance(value, dict):
            reason = {str(k).lower(): v for k, v in value.items()}.get("reason")
            if isinstance(reason, str) and reason.strip():
                return " ".join(reason.split())
            break
    match = _REASON.search(answer)
    return " ".join(match.group(1).split()) if match else None


def weighted_digit(top: dict[str, float], low: int = LOW, high: int = HIGH) -> float | None:
    """The expected digit ``sum(k * p_k) / sum(p_k)`` over the tokens of ``top`` (token text
    → logprob) that are a digit ``low..high`` once stripped of spaces (spellings summed);
    None when none of them is.

    >>> weighted_digit({"Yes": -0.1}) is None
    True
    """
    mass: dict[int, float] = {}
    for token, logprob in top.items():
        word = token.strip()
        if (
            len(word) == 1
            and word.isdigit()
            and low <= int(word) <= high
            and isinstance(logprob, (int, float))
            and math.isfinite(logprob)
        ):
            mass[int(word)] = mass.get(int(word), 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return round(sum(k * p for k, p in mass.items()) / total, 12)


def token_at(tokens: Sequence[TokenLogprobs], span: tuple[int, int]) -> TokenLogprobs | None:
    """The token whose text is exactly the characters ``span`` of the tokens' concatenated
    text (give or take surrounding spaces); None when the span is split across tokens or
    shares its token with other characters.

    >>> toks = [TokenLogprobs('{"a": ', {}), TokenLogprobs(" 4", {" 4": -0.1})]
    >>> token_at(toks, (7, 8)).text
    ' 4'
    """
    start = 0
    for token in tokens:
        end = start + len(token.text)
        if start <= span[0] and span[1] <= end:
            lead = token.text[: span[0] - start]
            tail = token.text[span[1] - start :]
            return token if not lead.strip() and not tail.strip() else None
        start = end
    return None


def read_rubric(answer: str, tokens: Sequence[TokenLogprobs] | None = None) -> dict[str, Any]:
    """Scores from one judge answer: ``values`` (NaN where there is none), ``scoring`` per
    value (``logprobs`` or ``parsed``), ``reason``, and ``problems`` (why a value is NaN).

    With ``tokens`` (whose texts concatenate to ``answer``), a single-digit score is
    probability-weighted at its token (:func:`weighted_digit`).

    >>> read_rubric("Score: 9")["problems"][-1]
    'overall score 9 is outside 1..5'
    """
    found = find_scores(answer)
    if tokens is not None and "".join(t.text for t in tokens) != answer:
        tokens = None  # cannot place the digits: fall back to the text
    values: dict[str, float] = {}
    scoring: dict[str, str] = {}
    problems: list[str] = []
    for aspect, name in zip(ASPECTS, VALUE_NAMES, strict=True):
        hit = found.get(aspect)
        values[name] = NAN
        if hit is None:
            problems.append(f"no {aspect} score")
            continue
        if not LOW <= hit.value <= HIGH:
            problems.append(f"{aspect} score {hit.value:g} is outside {LOW}..{HIGH}")
            continue
        weighted = None
        if tokens is not None and hit.span is not None and hit.span[1] - hit.span[0] == 1:
            token = token_at(tokens, hit.span)
            weighted = weighted_digit(token.top) if token is not None else None
        values[name] = weighted if weighted is not None else hit.value
        scoring[name] = "logprobs" if weighted is not None else "parsed"
    return {
        "values": values,
        "scoring": scoring,
        "reason": find_reason(answer),
        "problems": problems,
    }


def view_grid(images: Sequence[Any]) -> Any:
    """One image holding ``images`` (a 3D asset's views) in a near-square grid, each cell the
    size of the first view; a single image is returned as it is.

    >>> from PIL import Image
    >>> view_grid([Image.new("RGB", (8, 6))] * 5).size
    (24, 12)
    """
    if len(images) == 1:
        return images[0]
    from PIL import Image

    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    width, height = images[0].size
    grid = Image.new("RGB", (cols * width, rows * height), "white")
    for i, image in enumerate(images):
        cell = image if image.size == (width, height) else image.resize((width, height))
        grid.paste(cell.convert("RGB"), ((i % cols) * width, (i // cols) * height))
    return grid


def judge_image(resources: Any, sample: Sample) -> tuple[Any, str] | str:
    """The image the judge sees for ``sample`` (an asset: :func:`view_grid` of its views)
    and the note that goes before the prompt; a str saying why there is none."""
    images = resources.load_views(sample.source)
    if isinstance(images, str):
        return images
    note = ASSET_NOTE.format(n=len(images)) if len(images) > 1 else ""
    return view_grid(images), note


def rubric_prompt(caption: str, template: str | None = None) -> str:
    """The rubric prompt for ``caption`` (the shipped ``judge_rubric`` unless ``template``).

    >>> 'caption: "A cat \\\\u003cb\\\\u003e."' in rubric_prompt("A cat <b>.")
    True
    """
    text = template if template is not None else load_prompt("judge_rubric")
    return render(text, captions=quote_data([caption], ["caption"], "{}"))


class VLMJudge(Metric):
    """Rubric scores (1-5) from the ``judge`` role, batched; see the module docstring.

    Options (``evaluate: options: vlm_judge: {...}`` in the config): ``max_new_tokens``
    (96), ``template`` (a prompt file replacing ``judge_rubric``; ``{captions}`` is where
    the quoted caption goes).
    """

    name = "vlm_judge"
    value_names = VALUE_NAMES
    needs = frozenset({"image", "judge"})

    def __init__(self, max_new_tokens: int = 96, template: str | None = None):
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise TypeError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
        if max_new_tokens < 8:
            raise TypeError(f"max_new_tokens must be at least 8, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.template = read_override("judge_rubric", template) if template else None

    def score(self, samples: Sequence[Sample], resources: Any) -> list[Score]:
        scores: list[Score | None] = [None] * len(samples)
        grader = resources.get("judge")  # KeyError without one: every sample says so
        asks: list[tuple[int, Any, str]] = []
        for i, sample in enumerate(samples):
            seen = judge_image(resources, sample)
            if isinstance(seen, str):
                scores[i] = Score.failed(self.value_names, seen)
            elif not sample.caption.strip():
                scores[i] = Score.failed(self.value_names, "empty caption")
            else:
                image, note = seen
                asks.append((i, image, note + rubric_prompt(sample.caption, self.template)))
        for start in range(0, len(asks), resources.batch_size):
            chunk = asks[start : start + resources.batch_size]
            answers = grader.generate(
                [image for _, image, _ in chunk], [p for _, _, p in chunk], self.max_new_tokens
            )
            for (i, _, _), answer in zip(chunk, answers, strict=True):
                scores[i] = self.from_answer(answer)
        return [s for s in scores if s is not None]

    def from_answer(self, answer: Generation) -> Score:
        """The :class:`Score` of one judge answer."""
        read = read_rubric(answer.text, answer.tokens)
        kinds = sorted(set(read["scoring"].values()))
        info: dict[str, Any] = {"scoring": kinds[0] if len(kinds) == 1 else "mixed"}
        if len(kinds) > 1:
            info["scoring_by_value"] = read["scoring"]
        elif not kinds:
            info["scoring"] = "none"
        if read["reason"]:
            info["reason"] = read["reason"]
        failure = None
        if read["problems"]:
            snippet = " ".join(answer.text.split())[:200]
            failure = f"{'; '.join(read['problems'])} in the judge's answer: {snippet!r}"
        return Score(read["values"], failure=failure, info={"vlm_judge": info})
