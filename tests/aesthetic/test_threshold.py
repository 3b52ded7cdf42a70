"""The --top-fraction cut and the selection priority: pure functions against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from dreamrate.aesthetic.filtering.threshold import (
    HISTOGRAM_BINS,
    bin_mask,
    cut_bin,
    kth_largest,
    rows_to_keep,
)
from dreamrate.aesthetic.select import priority


def _threshold(values: np.ndarray, keep: int, bins: int) -> float:
    """The three passes of the manifest, on one array."""
    lo, hi = float(values.min()), float(values.max())
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.histogram(values, bins=edges)[0]
    top_bin, rank = cut_bin(counts, keep)
    return kth_largest(values[bin_mask(values, edges, top_bin)], rank)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [4, 1000, HISTOGRAM_BINS])
def test_the_cut_is_the_kth_best_value(seed: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=5000).astype(np.float32)
    values[:50] = values[50]  # ties at the cut are kept together
    for keep in (1, 7, 50, 2500, 5000):
        assert _threshold(values, keep, bins) == np.sort(values)[::-1][keep - 1]


def test_rows_to_keep_rounds_up_and_keeps_one() -> None:
    assert rows_to_keep(0.1, 1000) == 100
    assert rows_to_keep(0.1, 1001) == 101
    assert rows_to_keep(1e-9, 10) == 1
    assert rows_to_keep(1.0, 10) == 10


def test_the_top_bin_includes_the_maximum() -> None:
    edges = np.linspace(0.0, 1.0, 5)
    assert bin_mask(np.array([1.0, 0.75, 0.5]), edges, 3).tolist() == [True, True, False]
    assert bin_mask(np.array([0.5, 0.75]), edges, 2).tolist() == [True, False]


def test_priority_prefers_few_ratings_and_disagreement() -> None:
    n = np.array([0, 1, 4, 0])
    few = priority(n, None)
    assert few[0] > few[1] > few[2] and few[0] == few[3]
    spread = priority(n, np.array([0.1, 0.1, 0.1, 0.4]))
    assert spread[3] > spread[0]  # equally unrated, but the heads disagree more
    assert spread[2] < spread[0]
    # Without a usable spread it falls back to counts alone.
    assert np.array_equal(priority(n, np.zeros(4)), few)
    assert np.array_equal(priority(n, np.array([np.nan, 1, 1, 1])), few)
