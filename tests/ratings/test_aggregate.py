"""The aggregation maths on hand-made panels whose rater effects are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from dreamrate.ratings.aggregate import (
    AggregateOptions,
    RatingPanel,
    mean_targets,
    rater_aware_targets,
)


def _panel(seed: int = 0, n_img: int = 600, n_rat: int = 40, per_image: int = 4):
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 1.5, n_img)
    offset = rng.normal(0, 1, n_rat)
    offset -= offset.mean()
    scale = rng.uniform(0.5, 1.5, n_rat)
    scale /= scale.mean()
    noise = rng.uniform(0.2, 1.0, n_rat)
    images, raters, values = [], [], []
    for i in range(n_img):
        for j in rng.choice(n_rat, per_image, replace=False):
            images.append(i)
            raters.append(f"r{j:02d}")
            values.append(5.5 + offset[j] + scale[j] * truth[i] + rng.normal(0, noise[j]))
    return truth, offset, scale, noise, np.array(images), np.array(raters), np.array(values)


def test_mean_targets_are_per_image_means_with_min_ratings() -> None:
    panel = RatingPanel.from_columns(
        [1, 1, 2, 3, 3, 3], ["a", "b", "a", "a", "b", "c"], [2, 4, 9, 1, 2, 6]
    )
    targets = mean_targets(panel, min_ratings=2)
    assert targets.image_ids.tolist() == [1, 3]
    assert targets.target.tolist() == [3.0, 3.0]
    assert targets.n_ratings.tolist() == [2, 3]


def test_known_offsets_scales_and_noise_are_recovered() -> None:
    truth, offset, scale, noise, images, raters, values = _panel()
    targets, effects = rater_aware_targets(RatingPanel.from_columns(images, raters, values))
    assert effects.rater_ids.tolist() == [f"r{j:02d}" for j in range(40)]
    assert np.abs(effects.offset - offset).max() < 0.35
    assert np.corrcoef(effects.offset, offset)[0, 1] > 0.95
    assert np.corrcoef(effects.scale, scale)[0, 1] > 0.9
    assert np.corrcoef(effects.noise, noise)[0, 1] > 0.8
    # Reliable raters (low noise) weigh more in the consensus.
    assert np.corrcoef(effects.weight, 1 / noise**2)[0, 1] > 0.7
    rho_aware = spearmanr(targets.target, truth).statistic
    rho_mean = spearmanr(
        mean_targets(RatingPanel.from_columns(images, raters, values)).target, truth
    ).statistic
    assert rho_aware > rho_mean + 0.03
    assert effects.spam == {}


def test_a_harsh_rater_does_not_drag_their_images_down() -> None:
    # Two equally good images; one was seen by a rater who gives everything 3 points less.
    rng = np.random.default_rng(1)
    images, raters, values = [], [], []
    for i in range(200):
        quality = rng.normal(0, 1)
        for j in rng.choice(10, 3, replace=False):
            images.append(i)
            raters.append(j)
            values.append(6 + quality - (3.0 if j == 0 else 0.0))
    images += [1000, 1001]
    raters += [0, 1]
    values += [3.0, 6.0]  # both are an average image for their rater
    targets, effects = rater_aware_targets(RatingPanel.from_columns(images, raters, values))
    got = dict(zip(targets.image_ids.tolist(), targets.target.tolist(), strict=True))
    assert abs(got[1000] - got[1001]) < 0.5  # the plain means differ by 3
    assert effects.offset[0] < effects.offset[1:].mean() - 2.5


def test_spam_raters_are_flagged_and_down_weighted() -> None:
    truth, _, _, _, images, raters, values = _panel(seed=2)
    values = values.copy()
    rng = np.random.default_rng(3)
    stamps = np.arange(len(values), dtype=np.float64) * 5.0
    constant, randoms, fast = raters == "r00", raters == "r01", raters == "r02"
    values[constant] = 7.0
    values[randoms] = rng.uniform(1, 10, randoms.sum())
    stamps[fast] = 1e6 + np.arange(fast.sum()) * 0.3  # 0.3 s per image
    panel = RatingPanel.from_columns(images, raters, values, stamps)
    targets, effects = rater_aware_targets(panel, AggregateOptions(spam_weight=0.0))
    assert effects.spam == {"r00": ["constant"], "r01": ["random"], "r02": ["fast"]}
    weights = dict(zip(effects.rater_ids.tolist(), effects.weight.tolist(), strict=True))
    assert weights["r00"] == weights["r01"] == weights["r02"] == 0.0
    assert spearmanr(targets.target, truth).statistic > 0.9


def test_images_below_min_ratings_get_no_target_and_weights_track_evidence() -> None:
    _, _, _, _, images, raters, values = _panel(seed=4, per_image=3)
    # Drop two ratings of image 0 so it has one.
    keep = ~((images == 0) & (np.cumsum(images == 0) > 1))
    panel = RatingPanel.from_columns(images[keep], raters[keep], values[keep])
    targets, _ = rater_aware_targets(panel, AggregateOptions(min_ratings=2))
    assert 0 not in targets.image_ids.tolist()
    assert len(targets) == 599
    targets1, _ = rater_aware_targets(panel)
    weights = dict(zip(targets1.image_ids.tolist(), targets1.weight.tolist(), strict=True))
    assert weights[0] < np.median(targets1.weight)
    assert ((targets1.weight > 0) & (targets1.weight <= 1)).all()


def test_bad_panels_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        RatingPanel.from_columns([1, 2], ["a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        RatingPanel.from_columns([1], ["a"], [float("nan")])
    with pytest.raises(ValueError, match="no ratings"):
        rater_aware_targets(RatingPanel.from_columns([], [], []))
