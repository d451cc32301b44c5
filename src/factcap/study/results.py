"""``factcap study results``: what the votes say, with their uncertainty.

From :meth:`StudyStore.votes <factcap.study.store.StudyStore.votes>`:

1. Votes of raters a crowd platform marked (returned, rejected, timed out) are left out.
2. **Gold checks.** A rater's gold accuracy is the share of their answered attention checks
   they got right (``same`` is wrong: the image's own caption is the better one). Raters
   below ``gold_threshold`` are excluded with all their votes; a rater who answered no
   gold item is kept and reported as such.
3. **Per source pair A|B**: wins, ties and losses of A from the pair's non-gold votes
   (``left``/``right`` mapped back to the sources), their rates, and 95 % intervals by the
   bootstrap over *items* (resample the pair's items with replacement, all votes of an item
   together; recompute the rates; fixed seed).
4. **Bradley–Terry** strengths per source when three or more are compared
   (:func:`factcap.stats.bradley_terry`): a tie counts half a win to each side; strengths
   sum to 1, so ``p_A / (p_A + p_B)`` is the model's chance that A is preferred to B.
5. **Agreement**: Krippendorff's alpha (nominal) over the units (item, pair) with at least
   two votes; a vote's value is the source it chose, or ``same`` (never the side).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from factcap.stats import (
    N_RESAMPLES,
    bradley_terry,
    format_number,
    format_rate,
    krippendorff_alpha,
    percentile_interval,
    resample_indices,
)
from factcap.study.design import GOLD_PAIR
from factcap.study.store import StudyStore

DEFAULT_GOLD_THRESHOLD = 0.8
OUTCOMES = ("wins", "ties", "losses")


def rater_table(votes: Sequence[dict[str, Any]], gold_threshold: float) -> list[dict[str, Any]]:
    """Per rater: votes, gold answered / correct / accuracy, and ``status``: ``kept``,
    ``no gold`` (kept), ``failed gold`` or ``excluded by platform: <reason>``.

    >>> v = [{"token": "t", "label": "r1", "external_id": None, "gold": True,
    ...       "gold_answer": "left", "choice": "right", "excluded": None}]
    >>> rater_table(v, 0.8)[0]["status"]
    'failed gold'
    """
    by_token: dict[str, dict[str, Any]] = {}
    for vote in votes:
        row = by_token.setdefault(
            vote["token"],
            {
                "token": vote["token"],
                "label": vote["label"],
                "external_id": vote.get("external_id"),
                "votes": 0,
                "gold_answered": 0,
                "gold_correct": 0,
                "excluded": vote.get("excluded"),
            },
        )
        row["votes"] += 1
        if vote["gold"]:
            row["gold_answered"] += 1
            row["gold_correct"] += vote["choice"] == vote["gold_answer"]
    for row in by_token.values():
        answered = row["gold_answered"]
        row["gold_accuracy"] = row["gold_correct"] / answered if answered else None
        if row["excluded"]:
            row["status"] = f"excluded by platform: {row['excluded']}"
        elif answered == 0:
            row["status"] = "no gold"
        elif row["gold_accuracy"] < gold_threshold:
            row["status"] = "failed gold"
        else:
            row["status"] = "kept"
    return sorted(by_token.values(), key=lambda r: r["label"])


def _kept(status: str) -> bool:
    return status in ("kept", "no gold")


def pair_outcomes(votes: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, np.ndarray]:
    """Per item (sorted by id): the counts of (wins, ties, losses) of ``a`` against ``b``.

    >>> v = [{"source": "A"}, {"source": "same"}, {"source": "B"}, {"source": "A"}]
    >>> for vote, item in zip(v, ["x", "x", "y", "y"]):
    ...     vote["item_id"] = item
    >>> {k: c.tolist() for k, c in pair_outcomes(v, "A", "B").items()}
    {'x': [1, 1, 0], 'y': [1, 0, 1]}
    """
    index = {a: 0, "same": 1, b: 2}
    counts: dict[str, np.ndarray] = {}
    for vote in votes:
        row = counts.setdefault(vote["item_id"], np.zeros(3, dtype=np.int64))
        row[index[vote["source"]]] += 1
    return dict(sorted(counts.items()))


def pair_summary(
    counts: dict[str, np.ndarray], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Totals, rates and bootstrap-over-items 95 % intervals of one pair's outcomes."""
    table = np.array(list(counts.values()), dtype=np.float64).reshape(-1, 3)
    totals = table.sum(axis=0)
    n = float(totals.sum())
    out: dict[str, Any] = {"items": len(counts), "votes": int(n)}
    out.update({k: int(v) for k, v in zip(OUTCOMES, totals, strict=True)})
    rates = totals / n if n else np.full(3, math.nan)
    names = ("win_rate", "tie_rate", "loss_rate")
    out.update({k: float(r) for k, r in zip(names, rates, strict=True)})
    if len(counts) >= 2:
        sums = table[resample_indices(len(counts), n_resamples, seed)].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled = sums / sums.sum(axis=1, keepdims=True)
        ci = {k: list(percentile_interval(resampled[:, i])) for i, k in enumerate(names)}
    else:
        ci = {k: [math.nan, math.nan] for k in names}
    out["ci95"] = ci
    return out


def compute(
    store: StudyStore,
    gold_threshold: float = DEFAULT_GOLD_THRESHOLD,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The study's results as a JSON-ready dict (see the module docstring)."""
    info = store.info
    sources = list(info["sources"])
    pairs = [tuple(p) for p in info.get("pairs", [])]
    votes = store.votes()
    raters = rater_table(votes, gold_threshold)
    kept = {r["token"] for r in raters if _kept(r["status"])}
    used = [v for v in votes if v["token"] in kept and not v["gold"] and v["pair"] != GOLD_PAIR]
    by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for vote in used:
        by_pair[vote["pair"]].append(vote)

    pair_rows = []
    wins = np.zeros((len(sources), len(sources)))
    position = {s: i for i, s in enumerate(sources)}
    for a, b in pairs:
        counts = pair_outcomes(by_pair.get(f"{a}|{b}", []), a, b)
        row = {"a": a, "b": b, **pair_summary(counts, n_resamples, seed)}
        pair_rows.append(row)
        i, j = position[a], position[b]
        wins[i, j] += row["wins"] + row["ties"] / 2
        wins[j, i] += row["losses"] + row["ties"] / 2

    strengths = None
    if len(sources) >= 3:
        values = bradley_terry(wins)
        strengths = {
            "normalisation": "sum 1; ties count half a win to each source",
            "strengths": {s: float(v) for s, v in zip(sources, values, strict=True)},
        }

    units: dict[tuple[str, str], list[str]] = defaultdict(list)
    for vote in used:
        units[vote["item_id"], vote["pair"]].append(vote["source"])
    pairable = [u for u in units.values() if len(u) >= 2]
    alpha = krippendorff_alpha(pairable) if pairable else math.nan

    public = [{k: v for k, v in r.items() if k != "token"} for r in raters]
    return {
        "study": str(store.dir),
        "sources": sources,
        "gold_threshold": gold_threshold,
        "bootstrap": {"resamples": n_resamples, "seed": seed, "over": "items"},
        "votes": {
            "total": len(votes),
            "gold": sum(v["gold"] for v in votes),
            "used": len(used),
            "excluded_by_platform": sum(bool(v["excluded"]) for v in votes),
            "excluded_failed_gold": sum(
                1 for v in votes if v["token"] not in kept and not v["excluded"]
            ),
        },
        "raters": public,
        "raters_excluded": [r["label"] for r in public if not _kept(r["status"])],
        "pairs": pair_rows,
        "bradley_terry": strengths,
        "agreement": {
            "krippendorff_alpha": alpha,
            "level": "nominal",
            "units": len(pairable),
        },
    }


def _rate(row: dict[str, Any], key: str) -> str:
    return format_rate(row[key], row["ci95"][key])


def table(results: dict[str, Any]) -> str:
    """The results for a terminal: pairs with intervals, strengths, agreement, raters."""
    lines = [
        f"study {results['study']}: {results['votes']['used']} votes used of "
        f"{results['votes']['total']} ({results['votes']['gold']} gold)",
        "",
        "pair (A vs B)  items  votes  A wins [95% CI]        ties [95% CI]          "
        "A loses [95% CI]",
    ]
    for row in results["pairs"]:
        lines.append(f"{row['a']} vs {row['b']}")
        lines.append(
            f"{'':14} {row['items']:>5}  {row['votes']:>5}  {_rate(row, 'win_rate'):<22} "
            f"{_rate(row, 'tie_rate'):<22} {_rate(row, 'loss_rate')}"
        )
    bt = results.get("bradley_terry")
    if bt:
        lines += ["", f"Bradley-Terry strength ({bt['normalisation']}):"]
        for source, value in sorted(bt["strengths"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {format_number(value):>7}  {source}")
    agreement = results["agreement"]
    lines += [
        "",
        f"agreement: Krippendorff's alpha (nominal) = {format_number(agreement['krippendorff_alpha'])} "
        f"over {agreement['units']} items x pairs with 2+ votes",
        "",
        f"raters (gold threshold {results['gold_threshold']:.2f}):",
    ]
    for r in results["raters"]:
        gold = (
            f"gold {r['gold_correct']}/{r['gold_answered']}"
            if r["gold_answered"]
            else "no gold answered"
        )
        who = r["label"] + (f" ({r['external_id']})" if r.get("external_id") else "")
        lines.append(f"  {who:<24} {r['votes']:>5} votes  {gold:<18} {r['status']}")
    if results["raters_excluded"]:
        lines.append(f"excluded: {', '.join(results['raters_excluded'])}")
    return "\n".join(lines)


def to_json(results: dict[str, Any]) -> str:
    """The results as JSON (NaN written as null)."""
    from factcap.schema import json_safe

    return json.dumps(json_safe(results), indent=2, ensure_ascii=False, allow_nan=False)
