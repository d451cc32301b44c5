"""factcap.stats against independent implementations: scipy.stats.bootstrap for the intervals,
the krippendorff package for alpha, choix for Bradley–Terry. factcap keeps its own (numpy only,
no scipy at run time; see the module) and these libraries are the reference, in the dev extra.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from factcap.stats import bootstrap_ci, bradley_terry, krippendorff_alpha, paired_difference

scipy_stats = pytest.importorskip("scipy.stats")
krippendorff = pytest.importorskip("krippendorff")
choix = pytest.importorskip("choix")

SEEDS = range(12)


def _scipy_percentile(data, statistic, seed, **kwargs):
    result = scipy_stats.bootstrap(
        data,
        statistic,
        n_resamples=999,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
        **kwargs,
    )
    return result.confidence_interval.low, result.confidence_interval.high


@pytest.mark.parametrize("seed", SEEDS)
def test_bootstrap_ci_is_scipys_percentile_interval(seed):
    # scipy draws its resamples as rng.integers(0, n, (n_resamples, n)) with one batch, as
    # resample_indices does: the same seed gives the same resamples, so the same interval up
    # to rounding (tolerance 1e-12)
    rng = np.random.default_rng(100 + seed)
    values = rng.normal(size=int(rng.integers(5, 80)))
    ours = bootstrap_ci(values, n_resamples=999, seed=seed)
    reference = _scipy_percentile((values,), np.mean, seed, vectorized=False)
    assert ours == pytest.approx(reference, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_paired_difference_is_scipys_paired_percentile_interval(seed):
    rng = np.random.default_rng(200 + seed)
    a = rng.normal(size=int(rng.integers(5, 80)))
    b = a + rng.normal(0.1, 0.5, size=a.size)
    ours = paired_difference(a, b, n_resamples=999, seed=seed)
    low, high = _scipy_percentile(
        (a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), seed, paired=True
    )
    assert (ours.low, ours.high) == pytest.approx((low, high), abs=1e-12)
    assert ours.diff == pytest.approx(float(np.mean(a - b)), abs=1e-12)


def _random_ratings(rng: np.random.Generator) -> np.ndarray:
    """coders x units, integer values 1..k, about 30 % missing (NaN)."""
    coders, units, k = int(rng.integers(2, 7)), int(rng.integers(3, 40)), int(rng.integers(2, 7))
    data = rng.integers(1, k + 1, size=(coders, units)).astype(float)
    data[rng.random(data.shape) < 0.3] = np.nan
    return data


@pytest.mark.parametrize("level", ["nominal", "interval"])
def test_alpha_is_the_krippendorff_packages_on_random_matrices(level):
    rng = np.random.default_rng(7)
    compared = 0
    for _ in range(150):
        data = _random_ratings(rng)
        units = [[None if math.isnan(v) else int(v) for v in unit] for unit in data.T]
        ours = krippendorff_alpha(units, level)
        try:
            reference = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        except ValueError:  # the package raises where nothing is pairable or nothing varies
            assert math.isnan(ours)
            continue
        assert ours == pytest.approx(reference, abs=1e-9)
        compared += 1
    assert compared >= 100


def _comparisons(wins: np.ndarray) -> list[tuple[int, int]]:
    return [
        (i, j) for i in range(len(wins)) for j in range(len(wins)) for _ in range(int(wins[i, j]))
    ]


def _choix_strengths(wins: np.ndarray) -> np.ndarray:
    """choix's maximum likelihood (no regularisation), as strengths that sum to 1."""
    params = choix.ilsr_pairwise(len(wins), _comparisons(wins), alpha=0.0, tol=1e-12)
    strengths = np.exp(params)
    return strengths / strengths.sum()


@pytest.mark.parametrize("seed", SEEDS)
def test_bradley_terry_is_choixs_maximum_likelihood(seed):
    rng = np.random.default_rng(300 + seed)
    k = int(rng.integers(2, 9))
    wins = rng.integers(1, 8, size=(k, k)).astype(float)  # every pair met, both ways
    np.fill_diagonal(wins, 0)
    ours = bradley_terry(wins)
    reference = _choix_strengths(wins)
    assert ours == pytest.approx(reference, abs=1e-8)
    assert list(np.argsort(-ours, kind="stable")) == list(np.argsort(-reference, kind="stable"))


def test_bradley_terry_ties_as_half_wins_is_choix_on_doubled_counts():
    # the study counts a tie as half a win to each side; choix takes whole comparisons, and
    # doubling every count leaves the maximum likelihood where it is
    wins = np.array([[0, 3.5, 2], [1.5, 0, 4.5], [3, 0.5, 0]])
    assert bradley_terry(wins) == pytest.approx(_choix_strengths(2 * wins), abs=1e-8)


def test_bradley_terry_where_choix_has_no_estimate():
    # a source that never wins: its estimate goes to 0; choix's unregularised iteration does
    # not converge, and its optimiser stops near 0 (about 1e-8)
    wins = np.array([[0, 3, 2], [0, 0, 0], [1, 2, 0]], dtype=float)
    assert bradley_terry(wins) == pytest.approx([2 / 3, 0, 1 / 3], abs=1e-9)
    with (
        pytest.raises(RuntimeError, match="converge"),
        np.errstate(divide="ignore", invalid="ignore"),
    ):
        choix.ilsr_pairwise(3, _comparisons(wins), alpha=0.0)
