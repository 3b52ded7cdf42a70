"""The ``--top-fraction`` cut: pure functions over histograms and values (no I/O).

The exact score of the k-th best row is found with bounded memory in three passes over the
scores: their range, a fine histogram (:func:`cut_bin` picks the bin holding the k-th
best), and the values inside that one bin (:func:`kth_largest`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["HISTOGRAM_BINS", "bin_mask", "cut_bin", "kth_largest", "rows_to_keep"]

#: Bins of the fine histogram: the last pass holds about rows / 65,536 values.
HISTOGRAM_BINS = 65_536


def rows_to_keep(fraction: float, valid: int) -> int:
    """How many rows the best ``fraction`` of ``valid`` scored rows is (at least one)."""
    return max(1, math.ceil(fraction * valid))


def cut_bin(counts: np.ndarray, keep: int) -> tuple[int, int]:
    """``(bin, rank)``: the histogram bin holding the ``keep``-th highest value, and that
    value's rank inside the bin (1 = the bin's highest)."""
    above = np.cumsum(counts[::-1])  # rows in the top j + 1 bins
    last = len(counts) - 1
    top_bin = last - int(np.searchsorted(above, keep))
    before = int(above[last - top_bin - 1]) if top_bin < last else 0
    return top_bin, keep - before


def bin_mask(values: np.ndarray, edges: np.ndarray, index: int) -> np.ndarray:
    """Which ``values`` fall in bin ``index`` of ``edges`` (the last bin includes its top)."""
    lo, hi = edges[index], edges[index + 1]
    upper = values <= hi if index == len(edges) - 2 else values < hi
    return (values >= lo) & upper


def kth_largest(values: np.ndarray, k: int) -> float:
    """The ``k``-th highest of ``values`` (1 = the highest)."""
    return float(np.sort(values)[::-1][k - 1])
