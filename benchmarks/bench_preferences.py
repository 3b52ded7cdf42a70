"""Effort benchmark: ratings, choices, or both, at the same number of clicks.

A synthetic community with a hidden truth (``aesthetic.synthetic``), in which one honest
member agrees with the truth order on about 70 % of within-prompt pairs. At equal effort
(one click = one emoji rating = one choice), train on (E) ratings only, (P) choices only and
(M) half of each; print held-out Spearman with the truth and pairwise accuracy against the
truth on within-prompt pairs of held-out prompts, for an ordinary community (5 % spammers)
and one whose members grade on steep private curves, with 15 % spammers. Baselines: per-image
mean ratings + ``RidgeCV`` and a plain Bradley-Terry logistic regression on embedding
differences. The world is not tuned to the results.

Run: .venv/bin/python -m benchmarks.bench_preferences [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, RidgeCV

from benchmarks.common import machine, print_table
from dreamrate.aesthetic.synthetic import make_world
from dreamrate.aesthetic.train import train_predictor, unit_rows
from dreamrate.ratings.aggregate import RatingPanel, mean_targets
from dreamrate.ratings.choices import ChoicePanel
from dreamrate.ratings.training_data import TrainingData


def _truth_figures(scores: np.ndarray, world, test: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    rho = float(spearmanr(scores, world.truth[test]).statistic)
    pos = {int(i): k for k, i in enumerate(test.tolist())}
    hits = total = 0
    for g in np.unique(world.groups[test]):
        members = [pos[int(i)] for i in test[world.groups[test] == g]]
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                a, b = members[x], members[y]
                dt = world.truth[test[a]] - world.truth[test[b]]
                if dt != 0:
                    total += 1
                    hits += int(np.sign(scores[a] - scores[b]) == np.sign(dt))
    return rho, hits / total


def run(clicks: int, images: int, *, steep: bool, seed: int) -> list[list[str]]:
    spam = 0.15 if steep else 0.05
    world = make_world(images, n_raters=300, spam_share=spam, steep_curves=steep, seed=seed)
    prompts = np.unique(world.groups)
    rng = np.random.default_rng(seed)
    test_prompts = rng.choice(prompts, len(prompts) // 5, replace=False)
    is_test = np.isin(world.groups, test_prompts)
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    x_test = world.embeddings[test]

    def ratings(n: int) -> RatingPanel:
        img, rat, val = world.random_ratings(n, rng, train)
        return RatingPanel.from_columns(img, [f"r{r}" for r in rat], val)

    def choices(n: int) -> ChoicePanel:
        a, b, who, winner = world.random_choices(int(n * 1.6), rng)
        keep = ~is_test[a] & ~is_test[b]
        a, b, who, winner = a[keep][:n], b[keep][:n], who[keep][:n], winner[keep][:n]
        return ChoicePanel.from_columns(a, b, [f"r{r}" for r in who], winner)

    def data(panel: RatingPanel, comparisons: ChoicePanel | None) -> TrainingData:
        return TrainingData(
            panel,
            train,
            world.embeddings[train],
            world.groups[train].astype(str),
            "synthetic",
            comparisons=comparisons,
        )

    rows = []
    e_panel, p_panel = ratings(clicks), choices(clicks)
    m_panel, m_choices = ratings(clicks // 2), choices(clicks // 2)
    empty = RatingPanel.from_columns([], [], [])
    for label, d in (
        ("E ratings only", data(e_panel, None)),
        ("P choices only", data(empty, p_panel)),
        ("M half and half", data(m_panel, m_choices)),
    ):
        started = time.perf_counter()
        result = train_predictor(d, seed=seed)
        seconds = time.perf_counter() - started
        rho, acc = _truth_figures(result.predictor.predict(x_test), world, test)
        rows.append([label, f"{rho:.3f}", f"{acc:.3f}", f"{seconds:.1f}"])
    # Baselines at the same clicks
    mean = mean_targets(e_panel)
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(
        unit_rows(world.embeddings[mean.image_ids]), mean.target
    )
    rho, acc = _truth_figures(ridge.predict(unit_rows(x_test)), world, test)
    rows.append(["mean ratings + RidgeCV", f"{rho:.3f}", f"{acc:.3f}", ""])
    decisive = p_panel.outcome != 0
    diff = (
        unit_rows(world.embeddings)[p_panel.image_a[decisive]]
        - unit_rows(world.embeddings)[p_panel.image_b[decisive]]
    )
    label = (p_panel.outcome[decisive] > 0).astype(int)
    logistic = LogisticRegression(fit_intercept=False, max_iter=2000).fit(
        np.vstack([diff, -diff]), np.r_[label, 1 - label]
    )
    rho, acc = _truth_figures(unit_rows(x_test) @ logistic.coef_[0], world, test)
    rows.append(["choices + plain Bradley-Terry logistic", f"{rho:.3f}", f"{acc:.3f}", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 clicks over 1,500 images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clicks, images = (3000, 1500) if args.quick else (15_000, 6000)
    print(f"machine: {machine()}")
    for steep, name in (
        (False, "ordinary community (5 % spammers)"),
        (True, "steep private curves, 15 % spammers"),
    ):
        print_table(
            f"{name}: {clicks:,} clicks, {images:,} images, 20 % of prompts held out",
            ["trained on", "Spearman vs truth", "pairwise acc. vs truth", "train s"],
            run(clicks, images, steep=steep, seed=args.seed),
        )


if __name__ == "__main__":
    main()
