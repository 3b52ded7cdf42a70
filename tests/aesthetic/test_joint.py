"""Ratings and choices in one head (issue 28): the weighting follows the held-out signal of
both kinds, a missing source leaves exactly the other, and the test fold never reaches it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from dreamrate.aesthetic.ask import AskInformation, plan_asks
from dreamrate.aesthetic.joint_fit import check_share, fit_joint, held_out_gain
from dreamrate.aesthetic.preference import problem_from
from dreamrate.aesthetic.synthetic import SyntheticWorld, make_world
from dreamrate.aesthetic.train import grouped_folds, train_predictor, unit_rows
from dreamrate.ratings.aggregate import RatingPanel
from dreamrate.ratings.choices import ChoicePanel
from dreamrate.ratings.training_data import TrainingData, TrainingError

IMAGES, DIM = 480, 16


def _world(seed: int) -> SyntheticWorld:
    return make_world(IMAGES + 320, dim=DIM, n_raters=40, spam_share=0.0, themes=8, seed=seed)


def _ratings(world: SyntheticWorld, n: int, rng: np.random.Generator, *, signal: bool):
    img, rat, val = world.random_ratings(n, rng, np.arange(IMAGES))
    if not signal:  # every rating a die roll: nothing about the images
        val = rng.integers(1, 11, len(val)).astype(float)
    return RatingPanel.from_columns(img, [f"r{r}" for r in rat], val)


def _choices(world: SyntheticWorld, n: int, rng: np.random.Generator, *, signal: bool):
    a, b, who, winner = world.random_choices(3 * n, rng)
    keep = (a < IMAGES) & (b < IMAGES)
    a, b, who, winner = a[keep][:n], b[keep][:n], who[keep][:n], winner[keep][:n]
    if not signal:  # coin flips
        winner = np.where(rng.random(len(a)) < 0.5, "a", "b").astype(object)
    return ChoicePanel.from_columns(a, b, [f"r{r}" for r in who], winner)


def _data(world: SyntheticWorld, panel: RatingPanel, choices: ChoicePanel | None) -> TrainingData:
    return TrainingData(
        panel,
        np.arange(IMAGES),
        world.embeddings[:IMAGES],
        world.groups[:IMAGES].astype(str),
        "synthetic",
        comparisons=choices,
    )


def _held_out_rho(world: SyntheticWorld, result) -> float:  # type: ignore[no-untyped-def]
    """Spearman with the hidden truth on images no source ever saw."""
    unseen = np.arange(IMAGES, len(world.truth))
    return float(
        spearmanr(result.predictor.predict(world.embeddings[unseen]), world.truth[unseen]).statistic
    )


EMPTY = RatingPanel.from_columns([], [], [])


def _asked(world: SyntheticWorld, result) -> set[str]:  # type: ignore[no-untyped-def]
    """The kinds the trained predictor asks for in a batch of 20 (pairs within prompts)."""
    x = world.embeddings[:IMAGES]
    groups = world.groups[:IMAGES]
    pairs = np.array([(i, j) for i in range(IMAGES) for j in range(i + 1, min(i + 4, IMAGES))])
    pairs = pairs[groups[pairs[:, 0]] == groups[pairs[:, 1]]]
    info = AskInformation.of(result.predictor.training)
    p = result.predictor
    return {a.kind for a in plan_asks(p.predict(x), p.ensemble_predict(x), pairs, 20, info)}


def test_coin_flip_choices_leave_the_ratings_model() -> None:
    world = _world(1)
    rng = np.random.default_rng(1)
    ratings = _ratings(world, 1500, rng, signal=True)
    flips = _choices(world, 1500, rng, signal=False)
    e = train_predictor(_data(world, ratings, None))
    m = train_predictor(_data(world, ratings, flips))
    # The held-out choices say nothing, the ratings much: the ratings carry the head.
    assert m.summary["ratings_weight"] >= 0.75
    assert min(m.summary["fold_ratings_weights"]) >= 0.75
    assert _held_out_rho(world, m) == pytest.approx(_held_out_rho(world, e), abs=0.03)
    assert _held_out_rho(world, e) > 0.6
    assert _asked(world, m) == {"rating"}  # coin flips teach nothing: ask for ratings


def test_die_roll_ratings_leave_the_choices_model() -> None:
    world = _world(2)
    rng = np.random.default_rng(2)
    noise = _ratings(world, 1500, rng, signal=False)
    choices = _choices(world, 1500, rng, signal=True)
    p = train_predictor(_data(world, EMPTY, choices))
    m = train_predictor(_data(world, noise, choices))
    assert m.summary["ratings_weight"] <= 0.25
    assert max(m.summary["fold_ratings_weights"]) <= 0.25
    assert _held_out_rho(world, m) == pytest.approx(_held_out_rho(world, p), abs=0.03)
    assert _held_out_rho(world, p) > 0.5
    assert _asked(world, m) == {"choice"}  # die rolls teach nothing: ask for choices


def test_a_withheld_source_leaves_exactly_the_other() -> None:
    world = _world(3)
    rng = np.random.default_rng(3)
    ratings = _ratings(world, 800, rng, signal=True)
    choices = _choices(world, 800, rng, signal=True)
    x = world.embeddings[:IMAGES]
    e = train_predictor(_data(world, ratings, None)).predictor.predict(x)
    p = train_predictor(_data(world, EMPTY, choices)).predictor.predict(x)
    no_choices = ChoicePanel.from_columns([], [], [], [])
    for data, weight, expected in (
        (_data(world, ratings, no_choices), None, e),  # an empty comparisons file
        (_data(world, ratings, choices), 1.0, e),  # choices weigh nothing
        (_data(world, ratings, choices), 0.0, p),  # ratings weigh nothing
    ):
        got = train_predictor(data, ratings_weight=weight).predictor.predict(x)
        np.testing.assert_array_equal(got, expected)
    both = train_predictor(_data(world, ratings, choices)).predictor.predict(x)
    assert not np.allclose(both, e) and not np.allclose(both, p)


def test_the_test_fold_never_reaches_its_weights() -> None:
    """Fold f's head and ratings weight stay the same whatever fold f's own ratings and
    clicks say (here: turned upside down)."""
    world = _world(4)
    rng = np.random.default_rng(4)
    ratings = _ratings(world, 1200, rng, signal=True)
    choices = _choices(world, 1200, rng, signal=True)
    data = _data(world, ratings, choices)
    clean = train_predictor(data)
    groups = world.groups[:IMAGES].astype(str)
    test = grouped_folds(groups, 5, 0)[0][1]  # the first outer fold, as training splits it
    flip = np.isin(ratings.image_ids, test)
    upside_down = RatingPanel.from_columns(
        ratings.image_ids, ratings.rater_ids, np.where(flip, 11 - ratings.values, ratings.values)
    )
    inside = np.isin(choices.image_a, test) & np.isin(choices.image_b, test)
    reversed_clicks = ChoicePanel(
        choices.image_a,
        choices.image_b,
        choices.rater_ids,
        np.where(inside, -1, 1) * choices.outcome,
    )
    assert flip.any() and inside.any()
    tampered = train_predictor(_data(world, upside_down, reversed_clicks))
    heads, tampered_heads = clean.predictor.ensemble, tampered.predictor.ensemble
    assert heads is not None and tampered_heads is not None
    # (The CV heads are shown on the final head's scale, which all folds share: compare
    # directions.)
    np.testing.assert_allclose(
        heads[0][0] / np.linalg.norm(heads[0][0]),
        tampered_heads[0][0] / np.linalg.norm(tampered_heads[0][0]),
        rtol=1e-5,
        atol=1e-6,
    )
    assert clean.summary["fold_ratings_weights"][0] == tampered.summary["fold_ratings_weights"][0]
    # The other folds trained on the tampered data, and their heads moved.
    assert not np.allclose(heads[0][1:], tampered_heads[0][1:])
    # The figures of the tampered fold are measured against the tampered labels: worse.
    assert (
        tampered.metrics["dreamrate"]["choice_accuracy"]
        < clean.metrics["dreamrate"]["choice_accuracy"]
    )


def test_held_out_gain_scores_both_kinds_and_ignores_sign_and_scale() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    x = np.eye(400)
    a, b = rng.integers(0, 400, 2000), rng.integers(0, 400, 2000)
    b = np.where(a == b, (a + 1) % 400, b)
    won = (truth[a] - truth[b] + rng.normal(0, 0.5, 2000)) > 0
    choices = ChoicePanel.from_columns(a, b, ["m"] * 2000, np.where(won, "a", "b"))
    p = problem_from(
        x,
        {i: i for i in range(400)},
        rated_ids=np.arange(400),
        targets=5 + truth + rng.normal(0, 0.5, 400),
        weights=np.ones(400),
        choices=choices,
    )
    good = held_out_gain(p, truth)
    assert good[0] > 100 and good[1] > 300
    # Calibrated: any positive scale and shift of the scores gains the same.
    assert held_out_gain(p, 7 * truth - 3) == pytest.approx(good, rel=1e-4)
    noise = held_out_gain(p, rng.normal(size=400))
    assert noise[0] < 10 and noise[1] < 10
    # A head that orders everything backwards earns nothing.
    assert held_out_gain(p, -truth) == (0.0, 0.0)


def test_fit_joint_weighs_given_shares_and_both_ends_are_one_source() -> None:
    world = _world(5)
    rng = np.random.default_rng(5)
    ratings = _ratings(world, 800, rng, signal=True)
    choices = _choices(world, 800, rng, signal=True)
    ids = np.arange(IMAGES)
    x = unit_rows(world.embeddings[:IMAGES].astype(np.float64))
    groups = world.groups[:IMAGES]
    ends = {
        s: fit_joint(x, ids, groups, ratings, choices, ratings_share=s) for s in (0.0, 0.5, 1.0)
    }
    assert [h.ratings_share for h in ends.values()] == [0.0, 0.5, 1.0]
    assert not any(h.chosen for h in ends.values())
    # Choices alone: nothing of a rating asks for more; ratings alone: nothing of a click.
    assert ends[0.0].rating_information == 0.0 and ends[0.0].choice_information > 0
    assert ends[1.0].choice_information == 0.0 and ends[1.0].rating_information > 0
    chosen = fit_joint(x, ids, groups, ratings, choices)
    assert chosen.chosen and set(chosen.gains) >= {0.0, chosen.natural_share, 1.0}


def test_weights_outside_zero_to_one_are_refused() -> None:
    assert check_share(0) == 0.0 and check_share("0.25") == 0.25
    for bad in (-0.1, 1.5, float("nan"), "half"):
        with pytest.raises(ValueError, match="must be"):
            check_share(bad)
    world = _world(6)
    rng = np.random.default_rng(6)
    data = _data(world, _ratings(world, 300, rng, signal=True), None)
    with pytest.raises(TrainingError, match="--ratings-weight: ratings weight must be in"):
        train_predictor(data, ratings_weight=2.0)
    with pytest.raises(TrainingError, match="no choices"):
        train_predictor(data, ratings_weight=0.0)


def test_the_benchmark_refuses_a_split_naming_an_unknown_source() -> None:
    import subprocess
    import sys

    from benchmarks.bench_preferences import SplitError, parse_split

    assert parse_split("choices=25") == 0.25 and parse_split("ratings=75,choices=25") == 0.25
    assert parse_split("ratings=100") == 0.0
    for bad, needle in (
        ("likes=50", "unknown source 'likes'"),
        ("ratings=70,choices=20", "add up to 100"),
        ("choices=120", "0-100 %"),
        ("choices", "SOURCE=PERCENT"),
    ):
        with pytest.raises(SplitError, match=needle):
            parse_split(bad)
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_preferences", "--split", "likes=50"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("error: --split 'likes=50': unknown source")
