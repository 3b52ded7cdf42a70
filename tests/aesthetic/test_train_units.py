"""Grouped splitting, the penalty search, ranking metrics and active selection."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from dreamrate.aesthetic.select import choose_for_rating
from dreamrate.aesthetic.synthetic import make_world
from dreamrate.aesthetic.train import (
    RIDGE_ALPHAS,
    grouped_folds,
    nested_ridge_alphas,
    pairwise_accuracy,
    train_predictor,
    unit_rows,
)
from dreamrate.ratings.aggregate import RatingPanel
from dreamrate.ratings.training_data import TrainingData, TrainingError


def test_grouped_folds_never_split_a_prompt() -> None:
    groups = np.repeat(np.arange(30), 4)
    folds = grouped_folds(groups, 5, seed=0)
    seen = np.zeros(len(groups), dtype=int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        seen[test] += 1
    assert (seen == 1).all()


def test_penalty_search_equals_brute_force_with_sklearn_ridge() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    y = x @ rng.normal(size=20) * 0.3 + rng.normal(size=300)
    w = rng.uniform(0.2, 1.0, 300)
    splits = grouped_folds(np.repeat(np.arange(60), 5), 4, seed=1)

    def brute_force(folds: list[int]) -> float:
        errors = []
        for alpha in RIDGE_ALPHAS:
            total = 0.0
            for k in folds:
                train = np.concatenate([splits[j][1] for j in folds if j != k])
                test = splits[k][1]
                model = Ridge(alpha=alpha).fit(
                    unit_rows(x[train]), y[train], sample_weight=w[train]
                )
                total += float(np.sum(w[test] * (model.predict(unit_rows(x[test])) - y[test]) ** 2))
            errors.append(total)
        return RIDGE_ALPHAS[int(np.argmin(errors))]

    per_fold, final = nested_ridge_alphas(x, y, w, splits)
    # Fold 0's penalty is chosen without ever looking at fold 0 (the outer test fold).
    assert per_fold[0] == pytest.approx(brute_force([1, 2, 3]))
    assert final == pytest.approx(brute_force([0, 1, 2, 3]))


def test_pairwise_accuracy() -> None:
    truth = np.arange(50, dtype=float)
    assert pairwise_accuracy(truth, truth * 2) == 1.0
    assert pairwise_accuracy(truth, -truth) == 0.0
    big = np.arange(5000, dtype=float)
    assert 0.47 < pairwise_accuracy(big, np.random.default_rng(0).normal(size=5000)) < 0.53


def test_training_beats_nothing_and_reports_the_baseline() -> None:
    world = make_world(600, dim=64, n_raters=30, seed=5)
    rng = np.random.default_rng(0)
    img, rat, val = world.random_ratings(1800, rng)
    data = TrainingData(
        RatingPanel.from_columns(img, rat, val),
        np.arange(600),
        world.embeddings,
        world.groups,
        "synthetic",
    )
    result = train_predictor(data)
    assert set(result.metrics) == {"dreamrate", "baseline"}
    assert result.metrics["dreamrate"]["spearman"] > 0.3
    assert result.predictor.ensemble is not None and result.predictor.ensemble[0].shape == (5, 64)
    assert np.corrcoef(result.predictor.predict(world.embeddings), world.truth)[0, 1] > 0.5
    with pytest.raises(TrainingError, match="need at least 20 images"):
        small = TrainingData(
            RatingPanel.from_columns(img[:12], rat[:12], val[:12]),
            np.arange(600),
            world.embeddings,
            world.groups,
            "synthetic",
        )
        train_predictor(small)


def test_active_selection_prefers_unrated_uncertain_and_diverse_images() -> None:
    e = np.eye(4)
    x = np.array([e[0], e[0], e[1], e[2], e[3]])
    # Unrated images first.
    assert choose_for_rating(x, np.array([5, 5, 0, 5, 5]), 1) == [2]
    # Equal counts: the most uncertain image, then not its twin but something new.
    picks = choose_for_rating(
        x, np.zeros(5, dtype=int), 2, uncertainty=np.array([3.0, 2.9, 1, 1, 1])
    )
    assert picks[0] == 0 and picks[1] != 1
    assert choose_for_rating(x, np.zeros(5, dtype=int), 0) == []
