"""Held-out figures with intervals: a bootstrap over prompts of out-of-fold predictions."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["REPS", "grouped_interval", "proportion_interval", "with_intervals"]

#: Bootstrap resamples per interval.
REPS = 200


def grouped_interval(
    groups: np.ndarray,
    stat: Callable[[np.ndarray], float],
    *,
    reps: int = REPS,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``stat(rows)`` over resamples of whole groups (prompts), so
    images of one prompt, which move together, are never counted as independent. NaN when
    there are fewer than two groups."""
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if len(inverse) else 0
    if n_groups < 2:
        return float("nan"), float("nan")
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(n_groups + 1))
    members = [order[starts[g] : starts[g + 1]] for g in range(n_groups)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        rows = np.concatenate([members[g] for g in rng.integers(0, n_groups, n_groups)])
        values.append(stat(rows))
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(lo), float(hi)


def proportion_interval(share: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson interval of a share of ``n`` independent trials (NaN without trials)."""
    from scipy.stats import norm

    if n <= 0 or not np.isfinite(share):
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2))
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def with_intervals(
    figures: dict[str, float],
    truth: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """``figures`` plus ``spearman_low/high`` and ``pairwise_low/high``: 95 % intervals of the
    held-out Spearman and pairwise accuracy of ``pred`` against ``truth``, by prompt."""
    from scipy.stats import spearmanr

    from dreamrate.aesthetic.train import pairwise_accuracy

    if len(truth) < 3 or np.std(truth) == 0 or np.std(pred) == 0:
        return dict(figures)

    def rho(rows: np.ndarray) -> float:
        if np.std(truth[rows]) == 0 or np.std(pred[rows]) == 0:
            return float("nan")
        return float(spearmanr(truth[rows], pred[rows]).statistic)

    def pairs(rows: np.ndarray) -> float:
        return pairwise_accuracy(truth[rows], pred[rows], pairs=20_000, seed=seed)

    out = dict(figures)
    out["spearman_low"], out["spearman_high"] = grouped_interval(groups, rho, seed=seed)
    out["pairwise_low"], out["pairwise_high"] = grouped_interval(groups, pairs, seed=seed)
    return out
