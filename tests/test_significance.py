"""Paired bootstrap differences between caption sources (``factcap evaluate`` summary)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from factcap.evaluate import Evaluation, significance, significance_table
from factcap.metrics import Sample, Score
from factcap.stats import bootstrap_ci, paired_difference, percentile_interval


def _evaluation(columns: dict[str, list[float]]) -> Evaluation:
    """One sample per (image, source) with value ``v`` from ``columns[source][image]``."""
    samples, scores = [], []
    for source, values in columns.items():
        for i, value in enumerate(values):
            samples.append(Sample(f"img{i}", f"{i}.jpg", source, "a caption"))
            scores.append({"m": Score({"v": value})})
    return Evaluation(samples, scores, {})


def test_pairing_finds_a_small_consistent_difference_that_unpaired_intervals_miss():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.1, 0.9, size=60)  # images differ a lot from each other
    better = base + 0.01 + rng.normal(0, 0.002, size=60)  # each caption slightly better
    d = paired_difference(better, base, seed=1)
    assert d.significant and 0.009 < d.low < d.diff < d.high < 0.011
    # the two means' own intervals overlap: comparing them separately would see nothing
    low_b, high_b = bootstrap_ci(better, seed=1)
    low_a, high_a = bootstrap_ci(base, seed=1)
    assert low_b < high_a and low_a < high_b


def test_no_difference_is_not_significant_and_noise_straddles_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.1, size=200)
    noise = a + rng.normal(0, 0.05, size=200) - 0.0  # same mean, noisy pairing
    d = paired_difference(noise, a, seed=0)
    assert d.low < 0 < d.high and not d.significant
    same = paired_difference(a, a)
    assert (same.diff, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)


def test_missing_values_are_left_out_and_tiny_samples_have_no_interval():
    d = paired_difference([1.0, math.nan, 3.0], [0.5, 2.0, math.nan])
    assert (d.diff, d.n) == (0.5, 1) and math.isnan(d.low) and not d.significant
    empty = paired_difference([math.nan], [1.0])
    assert empty.n == 0 and math.isnan(empty.diff)
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval([1.0], confidence=1.5)


def test_the_interval_is_the_percentiles_of_resampled_means_computed_by_hand():
    deltas = np.array([0.3, -0.1, 0.2, 0.4, 0.0])
    d = paired_difference(deltas, np.zeros(5), n_resamples=500, seed=7)
    idx = np.random.default_rng(7).integers(0, 5, size=(500, 5))
    means = deltas[idx].mean(axis=1)
    assert d.low == pytest.approx(np.percentile(means, 2.5))
    assert d.high == pytest.approx(np.percentile(means, 97.5))
    assert d.diff == pytest.approx(0.16)


def test_significance_compares_every_source_with_the_first_final_style():
    ev = _evaluation(
        {
            "final:detailed": [0.30, 0.50, 0.20, 0.40, 0.60, 0.35],
            "final:short": [0.30, 0.50, 0.20, 0.40, 0.60, 0.35],
            "proposal:m": [0.20, 0.41, 0.12, 0.29, 0.52, 0.26],
        }
    )
    result = significance(ev)
    assert result["baseline"] == "final:detailed"
    assert set(result["differences"]) == {"final:short", "proposal:m"}
    worse = result["differences"]["proposal:m"]["v"]
    assert worse["significant"] and worse["high"] < 0 and worse["n"] == 6
    assert worse["diff"] == pytest.approx(-0.55 / 6)  # -0.10 -0.09 -0.08 -0.11 -0.08 -0.09
    assert not result["differences"]["final:short"]["v"]["significant"]
    # another baseline; a lone source has nothing to compare with
    assert set(significance(ev, "proposal:m")["differences"]) == {"final:detailed", "final:short"}
    assert significance(_evaluation({"final:detailed": [0.1, 0.2]})) is None
    text = significance_table(result)
    assert text.splitlines()[0].startswith("difference from final:detailed")
    [row] = [line for line in text.splitlines() if line.startswith("v ")]
    assert row.split()[1:2] == ["+0.0000"] and row.count("*") == 1 and "-0.0917 [" in row


def test_only_images_scored_by_both_sources_are_paired():
    ev = _evaluation(
        {"final:a": [0.5, math.nan, 0.5, 0.5], "proposal:b": [0.6, 0.9, math.nan, 0.7]}
    )
    d = significance(ev)["differences"]["proposal:b"]["v"]
    assert d["n"] == 2 and d["diff"] == pytest.approx(0.15)


def test_cli_refuses_an_unknown_baseline_before_loading_models(tmp_path, capsys):
    from factcap.cli import main

    results = tmp_path / "r.jsonl"
    row = {"id": "a", "source": "a.jpg", "status": "ok", "captions": {"detailed": "A cat."}}
    results.write_text(json.dumps(row) + "\n")
    args = ["evaluate", str(results), "-o", str(tmp_path / "s.jsonl"), "--baseline", "final:x"]
    assert main(args) == 2
    assert "--baseline 'final:x' is not a caption source here" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()
