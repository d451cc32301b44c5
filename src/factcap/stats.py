"""Statistics for comparing captioning setups: bootstrap confidence intervals over items.

A difference between two caption sources is only worth reporting when it is larger than the
noise of which images happened to be scored. The bootstrap (Efron, 1979) answers that without
assuming a distribution: resample the items with replacement many times, recompute the
statistic each time, and read the interval off the percentiles of the resampled values.
Paired data (two captions of the same image) are resampled together, so the interval is that
of the *difference*, which is much narrower than comparing two separate intervals.

Everything here is plain numpy and deterministic for a given ``seed``.

>>> d = paired_difference([0.30, 0.32, 0.29, 0.35], [0.28, 0.30, 0.28, 0.31], seed=0)
>>> round(d.diff, 4), d.n, d.significant
(0.0225, 4, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Resamples per interval: enough for stable 95 % percentiles at the third decimal.
N_RESAMPLES = 2000
CONFIDENCE = 0.95


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """A ``(n_resamples, n)`` array of item indices drawn with replacement.

    >>> resample_indices(3, 2, seed=1).shape
    (2, 3)
    """
    if n <= 0:
        return np.zeros((n_resamples, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def percentile_interval(
    values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The central ``confidence`` interval of resampled ``values`` (NaNs ignored).

    >>> [round(v, 6) for v in percentile_interval(list(range(101)), 0.9)]
    [5.0, 95.0]
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(arr, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over the items ``values`` (rows of an
    array when ``values`` is 2-D: each row is one item, resampled whole).

    >>> low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0], seed=0)
    >>> 1.0 <= low < 2.5 < high <= 4.0
    True
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape[0] == 0:
        return math.nan, math.nan
    indices = resample_indices(arr.shape[0], n_resamples, seed)
    return percentile_interval([statistic(arr[idx]) for idx in indices], confidence)


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """Mean of ``a - b`` over the items where both are finite, its bootstrap interval, and
    whether the interval excludes zero (``significant``)."""

    diff: float
    low: float
    high: float
    n: int
    significant: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> PairedDifference:
    """The paired difference ``mean(a - b)`` with a percentile-bootstrap interval over items.

    ``a[i]`` and ``b[i]`` belong to the same item (two captions of one image); items where
    either is missing (NaN) are left out. With fewer than 2 items there is no interval (NaN)
    and nothing is significant.

    >>> d = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    >>> d.diff, d.low, d.high, d.significant
    (0.0, 0.0, 0.0, False)
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.shape[0]} and {y.shape[0]}")
    keep = np.isfinite(x) & np.isfinite(y)
    deltas = x[keep] - y[keep]
    n = int(deltas.size)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, False)
    diff = float(deltas.mean())
    if n < 2:
        return PairedDifference(diff, math.nan, math.nan, n, False)
    means = deltas[resample_indices(n, n_resamples, seed)].mean(axis=1)
    low, high = percentile_interval(means, confidence)
    return PairedDifference(diff, low, high, n, bool(low > 0.0 or high < 0.0))


def bradley_terry(
    wins: Sequence[Sequence[float]] | np.ndarray, tol: float = 1e-10, max_iter: int = 100_000
) -> np.ndarray:
    """Bradley–Terry strengths from a matrix of wins: ``wins[i][j]`` is how often ``i`` beat
    ``j`` (a tie counted as half a win to each side is the caller's choice).

    The model says ``P(i beats j) = p_i / (p_i + p_j)``; the strengths are its maximum
    likelihood estimate, found with the MM algorithm of Hunter (2004), "MM algorithms for
    generalized Bradley–Terry models", Ann. Statist. 32(1): iterate
    ``p_i <- W_i / sum_j n_ij / (p_i + p_j)`` (``W_i`` the wins of ``i``, ``n_ij`` the
    comparisons of ``i`` and ``j``), normalised to **sum 1** after each step. A player with
    no win gets strength 0 (its estimate goes to 0); players in parts of the comparison
    graph that never meet are not comparable and get NaN.

    Two players: the estimate is the observed share, ``p_0 = w / (w + l)``.

    >>> [round(float(p), 4) for p in bradley_terry([[0, 7], [3, 0]])]
    [0.7, 0.3]
    >>> [round(float(p), 3) for p in bradley_terry([[0, 2, 1], [1, 0, 2], [2, 1, 0]])]
    [0.333, 0.333, 0.333]
    """
    w = np.asarray(wins, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"wins must be a square matrix, got shape {w.shape}")
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("wins must be finite and not negative")
    k = w.shape[0]
    w = w.copy()
    np.fill_diagonal(w, 0.0)
    games = w + w.T
    if k == 0:
        return np.zeros(0)
    if not _connected(games > 0):
        return np.full(k, math.nan)
    total = w.sum(axis=1)
    p = np.full(k, 1.0 / k)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :] + 1e-300)).sum(axis=1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1.0), 0.0)
        new /= new.sum()
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    return p


def _connected(adjacent: np.ndarray) -> bool:
    """Whether every node is reachable from node 0 along ``adjacent`` (either direction)."""
    k = adjacent.shape[0]
    seen = {0}
    todo = [0]
    while todo:
        i = todo.pop()
        for j in np.flatnonzero(adjacent[i] | adjacent[:, i]):
            if int(j) not in seen:
                seen.add(int(j))
                todo.append(int(j))
    return len(seen) == k


#: Krippendorff's alpha: the difference functions per level of measurement.
_ALPHA_DELTA: dict[str, Callable[[Any, Any], float]] = {
    "nominal": lambda c, k: 0.0 if c == k else 1.0,
    "interval": lambda c, k: (float(c) - float(k)) ** 2,
}


def krippendorff_alpha(units: Sequence[Sequence[Any]], level: str = "nominal") -> float:
    """Krippendorff's alpha reliability of ``units``: each unit the values its coders gave
    (None for a coder who gave none; the order of coders does not matter).

    Computed from the coincidence matrix as in Krippendorff (2011), "Computing
    Krippendorff's alpha-reliability": only units with at least two values count; each
    pair of values of one unit adds ``1 / (m_u - 1)`` to ``o[c, k]``, and
    ``alpha = 1 - (n - 1) * sum o[c, k] d(c, k) / sum n_c n_k d(c, k)``. ``level`` is
    ``nominal`` (any difference counts 1) or ``interval`` (squared difference). NaN when
    there are no pairable values or no variation at all (nothing to agree about).

    The paper's example C (4 coders, 12 units, missing values), nominal:

    >>> data = [[1, 1, None, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2],
    ...         [1, 2, 3, 4], [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [None, 5, 5, 5],
    ...         [None, None, 1, 1], [None, 3, None, None]]
    >>> round(krippendorff_alpha(data), 3)
    0.743
    """
    if level not in _ALPHA_DELTA:
        raise ValueError(f"level must be one of {', '.join(_ALPHA_DELTA)}, not {level!r}")
    delta = _ALPHA_DELTA[level]
    coincidences: dict[tuple[Any, Any], float] = {}
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidences[c, k] = coincidences.get((c, k), 0.0) + 1.0 / (m - 1)
    marginals: dict[Any, float] = {}
    for (c, _), count in coincidences.items():
        marginals[c] = marginals.get(c, 0.0) + count
    n = sum(marginals.values())
    if n <= 1:
        return math.nan
    observed = sum(count * delta(c, k) for (c, k), count in coincidences.items())
    expected = sum(
        nc * nk * delta(c, k) for c, nc in marginals.items() for k, nk in marginals.items()
    )
    if expected == 0:
        return math.nan
    return 1.0 - (n - 1) * observed / expected


def format_number(value: Any, digits: int = 3) -> str:
    """A number as the report and ``factcap study results`` show it: ``digits`` decimals, and
    ``n/a`` for what is not a finite number (NaN, infinity, None, text).

    >>> format_number(0.25), format_number(float("nan")), format_number(None), format_number(2, 1)
    ('0.250', 'n/a', 'n/a', '2.0')
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return f"{value:.{digits}f}" if ok else "n/a"


def format_rate(value: Any, ci: Any) -> str:
    """A value with its interval, ``ci`` a ``[low, high]`` pair (anything else: n/a).

    >>> format_rate(0.5, [0.25, 0.75]), format_rate(0.5, None)
    ('0.500 [0.250, 0.750]', '0.500 [n/a, n/a]')
    """
    low, high = ci if isinstance(ci, (list, tuple)) and len(ci) == 2 else (None, None)
    return f"{format_number(value)} [{format_number(low)}, {format_number(high)}]"
