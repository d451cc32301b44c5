"""factcap.stats: Bradley–Terry strengths and Krippendorff's alpha, checked against a
published worked example and cases solved by hand or by an independent optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factcap.stats import bradley_terry, krippendorff_alpha

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C: nominal data,
# 4 observers (columns) x 12 units (rows), missing values; the paper's alpha is 0.743.
KRIPPENDORFF_C = [
    [1, 1, None, 1],
    [2, 2, 3, 2],
    [3, 3, 3, 3],
    [3, 3, 3, 3],
    [2, 2, 2, 2],
    [1, 2, 3, 4],
    [4, 4, 4, 4],
    [1, 1, 2, 1],
    [2, 2, 2, 2],
    [None, 5, 5, 5],
    [None, None, 1, 1],
    [None, 3, None, None],
]


def test_alpha_of_krippendorffs_worked_example():
    assert round(krippendorff_alpha(KRIPPENDORFF_C), 3) == 0.743
    # the coders' order within a unit does not matter; nor do values as strings
    shuffled = [list(reversed(u)) for u in KRIPPENDORFF_C]
    as_text = [[None if v is None else f"v{v}" for v in u] for u in KRIPPENDORFF_C]
    assert krippendorff_alpha(shuffled) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_C))
    assert krippendorff_alpha(as_text) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_C))


def test_alpha_nominal_solved_by_hand():
    # units (a,a), (a,b), (b,b): o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6.
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (n_a n_b + n_b n_a) = 1 - 5 * 2 / 18 = 4/9.
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(4 / 9)
    # a unit with one value is not pairable and changes nothing
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"], ["a", None]]) == pytest.approx(
        4 / 9
    )
    assert krippendorff_alpha([["a", "a"], ["b", "b", "b"]]) == 1.0
    assert math.isnan(krippendorff_alpha([["a", "a"], ["a", "a"]]))  # no variation
    assert math.isnan(krippendorff_alpha([["a"], ["b", None]]))  # nothing pairable


def test_alpha_interval_solved_by_hand():
    # units (1,2), (3,3): o_12 = o_21 = 1, o_33 = 2; n_1 = n_2 = 1, n_3 = 2, n = 4.
    # observed = 2 * (1-2)^2 = 2; expected = 2 * (1*1*1 + 1*2*4 + 1*2*1) = 22
    # alpha = 1 - 3 * 2 / 22 = 8/11
    assert krippendorff_alpha([[1, 2], [3, 3]], level="interval") == pytest.approx(8 / 11)
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha([[1, 2]], level="ratio-ish")


@pytest.mark.parametrize(("w", "l"), [(7, 3), (1, 1), (9, 1), (2.5, 0.5)])
def test_bradley_terry_two_players_is_the_observed_share(w, l):  # noqa: E741
    p = bradley_terry([[0, w], [l, 0]])
    assert p[0] == pytest.approx(w / (w + l), abs=1e-8)
    assert p.sum() == pytest.approx(1.0)


def _log_likelihood(log_p: np.ndarray, wins: np.ndarray) -> float:
    p = np.exp(log_p)
    total = 0.0
    for i in range(len(p)):
        for j in range(len(p)):
            if i != j:
                total += wins[i, j] * (math.log(p[i]) - math.log(p[i] + p[j]))
    return total


def test_bradley_terry_three_players_is_the_likelihood_maximum():
    from scipy.optimize import minimize

    wins = np.array([[0, 8, 6], [4, 0, 7], [2, 5, 0]], dtype=float)
    p = bradley_terry(wins)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] > p[1] > p[2]
    # the score equations: W_i / p_i = sum_j n_ij / (p_i + p_j) at the maximum
    games = wins + wins.T
    for i in range(3):
        rhs = sum(games[i, j] / (p[i] + p[j]) for j in range(3) if j != i)
        assert wins[i].sum() / p[i] == pytest.approx(rhs, rel=1e-7)
    # an independent optimiser of the same likelihood finds the same strengths
    best = minimize(lambda x: -_log_likelihood(x, wins), np.zeros(3), method="BFGS", tol=1e-12)
    q = np.exp(best.x) / np.exp(best.x).sum()
    np.testing.assert_allclose(p, q, atol=1e-5)


def test_bradley_terry_edges():
    p = bradley_terry([[0, 3, 2], [0, 0, 1], [1, 2, 0]])
    assert p[1] > 0  # one win over player 2
    assert bradley_terry([[0, 2], [0, 0]])[1] == pytest.approx(0.0, abs=1e-6)  # never won
    disconnected = bradley_terry([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    assert np.isnan(disconnected).all()
    with pytest.raises(ValueError, match="square"):
        bradley_terry([[0, 1, 2]])
    with pytest.raises(ValueError, match="negative"):
        bradley_terry([[0, -1], [1, 0]])
