"""The loop benchmark's and the demo's intervals, checked on hand-made tables."""

from __future__ import annotations

import math

import pytest

from dreamrate.ratings.arena_stats import diversity_bits, mean_interval, paired_gain


def test_mean_interval_is_students_t_on_a_hand_made_table() -> None:
    # mean 3, sample sd sqrt(2.5), t(0.975, 4) = 2.776445105
    estimate = mean_interval([1, 2, 3, 4, 5])
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)
    assert estimate.value == 3 and estimate.n == 5
    assert estimate.low == pytest.approx(3 - half, abs=1e-8)
    assert estimate.high == pytest.approx(3 + half, abs=1e-8)
    assert estimate.excludes_zero()
    assert not mean_interval([-1.0, 2.0, -0.5, 0.5]).excludes_zero()
    assert mean_interval([2.0, 2.0, 2.0]).low == 2.0  # no spread, no width
    one = mean_interval([7.0])
    assert one.value == 7 and math.isnan(one.low) and math.isnan(one.high)


def test_paired_gain_takes_out_what_the_pairs_share() -> None:
    before = [1.0, 5.0, 9.0, 3.0]
    after = [1.5, 5.4, 9.6, 3.5]  # differences 0.5, 0.4, 0.6, 0.5: mean 0.5, sd 0.0816497
    gain = paired_gain(before, after)
    half = 3.182446305 * 0.08164965809 / 2  # t(0.975, 3) * sd / sqrt(4)
    assert gain.value == pytest.approx(0.5)
    assert (gain.low, gain.high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert gain.excludes_zero()
    # Unpaired, the same numbers could not tell these two apart.
    assert not paired_gain([0, 0, 0, 0], [1.0, -1.0, 1.0, -1.2]).excludes_zero()
    with pytest.raises(ValueError, match="differ in number"):
        paired_gain([1.0], [1.0, 2.0])


def test_diversity_is_the_entropy_of_the_looks() -> None:
    assert diversity_bits(["red"] * 10) == 0
    assert diversity_bits(["red", "blue"] * 5) == pytest.approx(1.0)
    assert diversity_bits("abcdefgh") == pytest.approx(3.0)
    assert diversity_bits(
        [("red", "circle"), ("red", "square"), ("red", "circle"), ("red", "square")]
    ) == pytest.approx(1.0)
