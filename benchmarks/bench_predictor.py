"""Predictor benchmark on a synthetic community with a hidden taste (seeded).

1. Held-out Spearman against the hidden truth for (a) per-image mean targets + plain
   ``Ridge()`` (what Simulacra did) and (b) rater-aware targets + dreamrate's model
   (Ridge, penalty chosen by grouped CV), at 2k, 10k and 50k ratings (about three
   ratings per image, 200 raters, 5% spammers).
2. Ratings needed to reach Spearman 0.8 when the images to rate are chosen at random
   versus by active selection (``aesthetic.select.choose_for_rating``).
3. Wall time of ``train_predictor`` (aggregation + nested grouped CV + report data)
   on 100k ratings over 20k images.

Run: .venv/bin/python -m benchmarks.bench_predictor [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from benchmarks.common import machine, print_table
from dreamrate.aesthetic.select import choose_for_rating
from dreamrate.aesthetic.synthetic import SyntheticWorld, make_world
from dreamrate.aesthetic.train import train_predictor
from dreamrate.ratings.aggregate import RatingPanel, mean_targets, rater_aware_targets
from dreamrate.ratings.training_data import TrainingData

TEST_IMAGES = 2000


def _spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(spearmanr(pred, truth).statistic)


def compare_targets(n_ratings: int, seed: int) -> tuple[float, float, float]:
    n_img = n_ratings // 3
    world = make_world(n_img + TEST_IMAGES, seed=seed)
    rng = np.random.default_rng(seed)
    pool = np.arange(n_img)
    img, rat, val = world.random_ratings(n_ratings, rng, pool)
    panel = RatingPanel.from_columns(img, rat, val)
    test = np.arange(n_img, n_img + TEST_IMAGES)
    truth = world.truth[test]

    mean = mean_targets(panel)
    baseline = Ridge().fit(world.embeddings[mean.image_ids], mean.target)
    rho_a = _spearman(baseline.predict(world.embeddings[test]), truth)

    data = TrainingData(panel, pool, world.embeddings[:n_img], world.groups[:n_img], "synthetic")
    started = time.perf_counter()
    result = train_predictor(data, model="ridge", seed=seed)
    seconds = time.perf_counter() - started
    rho_b = _spearman(result.predictor.predict(world.embeddings[test]), truth)
    return rho_a, rho_b, seconds


def _fit_round(
    world: SyntheticWorld,
    img: list[np.ndarray],
    rat: list[np.ndarray],
    val: list[np.ndarray],
    rng: np.random.Generator,
):
    panel = RatingPanel.from_columns(np.concatenate(img), np.concatenate(rat), np.concatenate(val))
    targets, _ = rater_aware_targets(panel)
    x = world.embeddings[targets.image_ids]
    heads = []
    for _ in range(5):  # bootstrap heads: their spread is the uncertainty
        boot = rng.integers(0, len(x), len(x))
        model = Ridge(alpha=1.0).fit(
            x[boot], targets.target[boot], sample_weight=targets.weight[boot]
        )
        heads.append((model.coef_, model.intercept_))
    return targets, heads


def ratings_to_reach(
    world: SyntheticWorld,
    pool: np.ndarray,
    test: np.ndarray,
    *,
    active: bool,
    batch: int,
    goal: float,
    limit: int,
    seed: int,
) -> tuple[int, list[tuple[int, float]]]:
    """Ratings spent until held-out Spearman reaches ``goal`` (or ``limit``)."""
    rng = np.random.default_rng(seed)
    start_img, start_rat, start_val = world.random_ratings(batch, rng, pool)
    img, rat, val = [start_img], [start_rat], [start_val]
    spent = len(start_img)
    curve = []
    while True:
        targets, heads = _fit_round(world, img, rat, val, rng)
        weights = np.stack([h[0] for h in heads])
        biases = np.array([h[1] for h in heads])
        rho = _spearman(
            world.embeddings[test] @ weights.mean(axis=0) + biases.mean(), world.truth[test]
        )
        curve.append((spent, rho))
        if rho >= goal or spent >= limit:
            return spent, curve
        if active:
            counts = np.zeros(len(world.truth), dtype=np.int64)
            np.add.at(counts, np.concatenate(img), 1)
            candidates = pool[rng.permutation(len(pool))[:5000]]
            x = world.embeddings[candidates]
            uncertainty = (x @ weights.T + biases).std(axis=1)
            well = world.embeddings[
                targets.image_ids[targets.weight >= np.quantile(targets.weight, 0.9)]
            ]
            chosen = candidates[
                choose_for_rating(
                    x, counts[candidates], batch, uncertainty=uncertainty, covered=well
                )
            ]
        else:
            chosen = rng.choice(pool, batch)
        raters = rng.integers(0, world.n_raters, len(chosen))
        img.append(chosen)
        rat.append(raters)
        val.append(world.rate(chosen, raters, rng))
        spent += len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sizes = (2_000, 10_000) if args.quick else (2_000, 10_000, 50_000)
    print(f"machine: {machine()}")

    rows = []
    for n in sizes:
        rho_a, rho_b, seconds = compare_targets(n, args.seed)
        rows.append(
            [f"{n:,}", f"{rho_a:.3f}", f"{rho_b:.3f}", f"{rho_b - rho_a:+.3f}", f"{seconds:.1f} s"]
        )
    print_table(
        "Held-out Spearman vs the hidden taste",
        [
            "ratings",
            "(a) mean + Ridge()",
            "(b) rater-aware + grouped-CV Ridge",
            "(b) - (a)",
            "train time (b)",
        ],
        rows,
    )

    n_pool = 5_000 if args.quick else 20_000
    world = make_world(n_pool + TEST_IMAGES, seed=args.seed + 100)
    pool, test = np.arange(n_pool), np.arange(n_pool, n_pool + TEST_IMAGES)
    limit = 40_000 if not args.quick else 10_000
    goal = 0.8 if not args.quick else 0.7
    curves = {}
    for mode in ("random", "active"):
        started = time.perf_counter()
        _, curves[mode] = ratings_to_reach(
            world,
            pool,
            test,
            active=mode == "active",
            batch=500,
            goal=goal,
            limit=limit,
            seed=args.seed,
        )
        print(f"  {mode}: {curves[mode][-1][0]:,} ratings ({time.perf_counter() - started:.0f} s)")

    def reach(curve: list[tuple[int, float]], level: float) -> int | None:
        return next((n for n, rho in curve if rho >= level), None)

    rows = []
    for level in (goal - 0.1, goal):
        r, a = reach(curves["random"], level), reach(curves["active"], level)
        ratio = f"{a / r:.0%}" if r and a else "n/a"
        rows.append(
            [
                f"{level:.1f}",
                f"{r:,}" if r else f"> {limit:,}",
                f"{a:,}" if a else f"> {limit:,}",
                ratio,
            ]
        )
    print_table(
        f"Ratings to reach held-out Spearman (pool {n_pool:,} images, batches of 500)",
        ["Spearman", "random", "active", "active / random"],
        rows,
    )

    if not args.quick:
        n_img, n_ratings = 20_000, 100_000
        world = make_world(n_img, seed=args.seed + 200)
        rng = np.random.default_rng(args.seed)
        img, rat, val = world.random_ratings(n_ratings, rng)
        data = TrainingData(
            RatingPanel.from_columns(img, rat, val),
            np.arange(n_img),
            world.embeddings,
            world.groups,
            "synthetic",
        )
        started = time.perf_counter()
        result = train_predictor(data, model="ridge", seed=args.seed)
        seconds = time.perf_counter() - started
        print_table(
            "Training time",
            ["ratings", "images", "wall time", "held-out Spearman vs mean ratings"],
            [
                [
                    f"{len(data.panel):,}",
                    f"{result.summary['images']:,}",
                    f"{seconds:.1f} s",
                    f"{result.metrics['dreamrate']['spearman']:.3f}",
                ]
            ],
        )


if __name__ == "__main__":
    main()
