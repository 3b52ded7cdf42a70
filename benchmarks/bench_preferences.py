"""Effort benchmark: ratings, choices, or both, at every split of one click budget.

A synthetic community with a hidden truth (``aesthetic.synthetic``), in which one honest
member agrees with the truth order on about 70 % of within-prompt pairs. One click is one
emoji rating or one choice between two images. For each split of a fixed budget between
ratings and choices (0, 25, 50, 75 and 100 % choices by default) the benchmark trains, on the
same clicks:

* the ratings part alone (E: rater-aware targets + Ridge) and the choices part alone (P:
  Bradley-Terry), the predictors ``dreamrate train`` makes from one source;
* the plain ensemble of those two heads, each standardised over the training images;
* M, the joint predictor ``dreamrate train`` makes from both (its sources' weights chosen by
  grouped CV on held-out ratings and choices).

It prints held-out Spearman with the truth and pairwise accuracy against the truth on
within-prompt pairs, on prompts no training click touched, beside each other for every row,
for an ordinary community (5 % spammers) and one whose members grade on steep private
curves, with 15 % spammers; then the goals of issue 28 and whether each is met. Baselines:
per-image mean ratings + ``RidgeCV`` and a plain Bradley-Terry logistic regression on
embedding differences, at the whole budget. A last row asks actively: starting from a
random fifth of the budget, each round trains M and asks for the ratings or choices of
most expected information (:mod:`dreamrate.aesthetic.ask`), against random asking (the
50 % split) at the same budget. The world is not tuned to the results.

Run: .venv/bin/python -m benchmarks.bench_preferences [--quick] [--seed N]
[--split choices=25 ...] [--no-active] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, RidgeCV

from benchmarks.common import machine, print_table
from dreamrate.aesthetic.ask import AskInformation, plan_asks
from dreamrate.aesthetic.synthetic import SyntheticWorld, make_world
from dreamrate.aesthetic.train import train_predictor, unit_rows
from dreamrate.ratings.aggregate import RatingPanel, mean_targets
from dreamrate.ratings.choices import ChoicePanel
from dreamrate.ratings.training_data import TrainingData

#: The sources a budget split may name.
SOURCES = ("ratings", "choices")
#: Default splits, as the choices' share of the budget.
SPLITS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Goals of issue 28.
WITHIN = 0.005  #: M at most this far below the better pure source
OVER_RIDGE = 0.06  #: M above mean ratings + RidgeCV among steep graders, at least
EMPTY = RatingPanel.from_columns([], [], [])


class SplitError(ValueError):
    """A budget split the benchmark cannot run."""


def parse_split(text: str) -> float:
    """The choices' share of the budget from ``choices=25``, ``ratings=75,choices=25`` or
    ``ratings=100`` (percent; the parts must add up to 100 when both are named).

    Raises
    ------
    SplitError
        one line: an unknown source, a part that is not a number in [0, 100], parts that do
        not add up.
    """
    parts: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise SplitError(f"--split {text!r}: write SOURCE=PERCENT (e.g. choices=25)")
        if name not in SOURCES:
            raise SplitError(
                f"--split {text!r}: unknown source {name!r} (the sources are ratings, choices)"
            )
        try:
            percent = float(value)
        except ValueError:
            raise SplitError(f"--split {text!r}: {value!r} is not a number") from None
        if not 0.0 <= percent <= 100.0:
            raise SplitError(f"--split {text!r}: {name} must be 0-100 %, not {value}")
        parts[name] = percent
    if len(parts) == 2 and abs(sum(parts.values()) - 100.0) > 1e-9:
        raise SplitError(f"--split {text!r}: ratings and choices must add up to 100 %")
    if "choices" in parts:
        return parts["choices"] / 100.0
    return 1.0 - parts["ratings"] / 100.0


@dataclass
class Bench:
    """One world, its held-out prompts and its pools of clicks."""

    world: SyntheticWorld
    train: np.ndarray
    test: np.ndarray
    rng: np.random.Generator
    seed: int

    def ratings(self, n: int) -> RatingPanel:
        img, rat, val = self.world.random_ratings(n, self.rng, self.train)
        return RatingPanel.from_columns(img, [f"r{r}" for r in rat], val)

    def choices(self, n: int) -> ChoicePanel:
        a, b, who, winner = self.world.random_choices(int(n * 1.6) + 10, self.rng)
        held = np.isin(a, self.test) | np.isin(b, self.test)
        a, b, who, winner = a[~held][:n], b[~held][:n], who[~held][:n], winner[~held][:n]
        return ChoicePanel.from_columns(a, b, [f"r{r}" for r in who], winner)

    def data(self, panel: RatingPanel, comparisons: ChoicePanel | None) -> TrainingData:
        return TrainingData(
            panel,
            self.train,
            self.world.embeddings[self.train],
            self.world.groups[self.train].astype(str),
            "synthetic",
            comparisons=comparisons if comparisons is not None and len(comparisons) else None,
        )

    def figures(self, scores: np.ndarray) -> tuple[float, float]:
        """Spearman with the truth over the held-out images, and pairwise accuracy on their
        within-prompt pairs."""
        truth, groups = self.world.truth[self.test], self.world.groups[self.test]
        rho = float(spearmanr(scores, truth).statistic)
        hits = total = 0
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            for x in range(len(rows)):
                for y in range(x + 1, len(rows)):
                    dt = truth[rows[x]] - truth[rows[y]]
                    if dt != 0:
                        total += 1
                        hits += int(np.sign(scores[rows[x]] - scores[rows[y]]) == np.sign(dt))
        return rho, hits / total


def _cell(figures: tuple[float, float] | None) -> str:
    return "–" if figures is None else f"{figures[0]:.3f} / {figures[1]:.3f}"


def _sign(value: float) -> str:
    return f"{value:+.3f}"


def run_world(
    clicks: int, images: int, *, steep: bool, seed: int, splits: list[float], active: bool
) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """The split table's rows, the baselines' and active asking's rows, and the goals."""
    spam = 0.15 if steep else 0.05
    world = make_world(images, n_raters=300, spam_share=spam, steep_curves=steep, seed=seed)
    prompts = np.unique(world.groups)
    rng = np.random.default_rng(seed)
    test_prompts = rng.choice(prompts, len(prompts) // 5, replace=False)
    is_test = np.isin(world.groups, test_prompts)
    bench = Bench(world, np.flatnonzero(~is_test), np.flatnonzero(is_test), rng, seed)
    x_train, x_test = world.embeddings[bench.train], world.embeddings[bench.test]
    # Nested pools: a split takes the first ratings and the first choices of the budget.
    all_ratings, all_choices = bench.ratings(clicks), bench.choices(clicks)

    def fit(panel: RatingPanel, comparisons: ChoicePanel | None):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = train_predictor(bench.data(panel, comparisons), seed=seed)
        return result, time.perf_counter() - started

    def first(panel: RatingPanel, n: int) -> RatingPanel:
        return RatingPanel(panel.image_ids[:n], panel.rater_ids[:n], panel.values[:n])

    def standard(result) -> np.ndarray:  # type: ignore[no-untyped-def]
        on_train = result.predictor.predict(x_train)
        return (result.predictor.predict(x_test) - on_train.mean()) / on_train.std()

    table: list[list[str]] = []
    measured: dict[float, dict[str, tuple[float, float]]] = {}
    for share in splits:
        n_choices = round(clicks * share)
        ratings, choices = (
            first(all_ratings, clicks - n_choices),
            all_choices.subset(np.arange(len(all_choices)) < n_choices),
        )
        row: dict[str, tuple[float, float]] = {}
        seconds = 0.0
        e = p = None
        if len(ratings):
            e, _ = fit(ratings, None)
            row["E"] = bench.figures(e.predictor.predict(x_test))
        if len(choices):
            p, _ = fit(EMPTY, choices)
            row["P"] = bench.figures(p.predictor.predict(x_test))
        if e is not None and p is not None:
            row["ensemble"] = bench.figures(standard(e) + standard(p))
            m, seconds = fit(ratings, choices)
            row["M"] = bench.figures(m.predictor.predict(x_test))
            weight = f"{m.summary['ratings_weight']:.2f}"
        else:  # one source: M is that source's predictor, exactly
            row["M"] = row["E"] if e is not None else row["P"]
            weight = "1" if e is not None else "0"
            seconds = 0.0
        measured[share] = row
        table.append(
            [
                f"{share * 100:.0f} %",
                f"{len(ratings):,} + {len(choices):,}",
                _cell(row.get("E")),
                _cell(row.get("P")),
                _cell(row.get("ensemble")),
                _cell(row["M"]),
                weight,
                f"{seconds:.0f}" if seconds else "",
            ]
        )

    # Goals against the pure sources (the 0 % and 100 % rows) and the ensemble
    goals: list[str] = []
    pure = [measured[s]["M"][0] for s in (0.0, 1.0) if s in measured]
    for share, row in measured.items():
        if "ensemble" not in row:
            continue
        m = row["M"][0]
        better_part = max(row["E"][0], row["P"][0])
        notes = []
        if pure:
            gap = m - max(pure)
            notes.append(
                f"vs better pure source {_sign(gap)} {'met' if gap >= -WITHIN else 'NOT met'}"
            )
        gap = m - better_part
        notes.append(
            f"vs better of its parts {_sign(gap)} {'met' if gap >= -WITHIN else 'NOT met'}"
        )
        gap = m - row["ensemble"][0]
        notes.append(f"vs ensemble {_sign(gap)} {'met' if gap > 0 else 'NOT met'}")
        goals.append(f"{share * 100:.0f} % choices: " + "; ".join(notes))

    # Baselines at the whole budget
    extra: list[list[str]] = []
    mean = mean_targets(all_ratings)
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(
        unit_rows(world.embeddings[mean.image_ids]), mean.target
    )
    ridge_figures = bench.figures(ridge.predict(unit_rows(x_test)))
    extra.append([f"mean ratings + RidgeCV ({clicks:,} ratings)", _cell(ridge_figures), ""])
    decisive = all_choices.outcome != 0
    unit = unit_rows(world.embeddings)
    diff = unit[all_choices.image_a[decisive]] - unit[all_choices.image_b[decisive]]
    label = (all_choices.outcome[decisive] > 0).astype(int)
    logistic = LogisticRegression(fit_intercept=False, max_iter=2000).fit(
        np.vstack([diff, -diff]), np.r_[label, 1 - label]
    )
    extra.append(
        [
            f"plain Bradley-Terry logistic ({clicks:,} choices)",
            _cell(bench.figures(unit_rows(x_test) @ logistic.coef_[0])),
            "",
        ]
    )
    mixed = [r["M"][0] for s, r in measured.items() if 0 < s < 1]
    if steep and mixed:
        gap = min(mixed) - ridge_figures[0]
        goals.append(
            f"every mixed M vs mean ratings + RidgeCV: at least {_sign(gap)} "
            f"({'met' if gap >= OVER_RIDGE else 'NOT met'}, goal +{OVER_RIDGE:.2f})"
        )
    if active:
        figures, asked = active_asking(bench, clicks)
        random = measured.get(0.5, {}).get("M")
        extra.append(
            [
                f"M, active asking ({asked}), {clicks:,} clicks",
                _cell(figures),
                "",
            ]
        )
        if random is not None:
            extra.append([f"M, random asking (50 % split), {clicks:,} clicks", _cell(random), ""])
            goals.append(f"active asking vs random asking {_sign(figures[0] - random[0])}")
    return table, extra, goals


def active_asking(bench: Bench, clicks: int, *, start: float = 0.2, rounds: int = 4):  # type: ignore[no-untyped-def]
    """Train on a random fifth of the budget (half of each kind), then in ``rounds`` rounds
    ask the rest by expected information; the final M's figures, and what was asked."""
    world, train = bench.world, bench.train
    rng = np.random.default_rng(bench.seed + 1)
    n0 = round(clicks * start)
    ratings, choices = bench.ratings(n0 // 2), bench.choices(n0 - n0 // 2)
    row_of = {int(i): k for k, i in enumerate(train.tolist())}
    # Candidate pairs: every within-prompt pair, and a quarter as many across prompts.
    groups = world.groups[train]
    within = [
        (i, j)
        for g in np.unique(groups)
        for k, i in enumerate(np.flatnonzero(groups == g).tolist())
        for j in np.flatnonzero(groups == g)[k + 1 :].tolist()
    ]
    across = rng.integers(0, len(train), (len(within) // 4, 2))
    across = across[groups[across[:, 0]] != groups[across[:, 1]]]
    pairs = np.vstack([np.asarray(within, dtype=np.int64).reshape(-1, 2), across])
    pair_of = {frozenset(map(int, p)): k for k, p in enumerate(pairs.tolist())}
    remaining = clicks - n0
    for r in range(rounds):
        count = remaining // (rounds - r)
        predictor = train_predictor(bench.data(ratings, choices), seed=bench.seed).predictor
        x = world.embeddings[train]
        rated = np.bincount([row_of[int(i)] for i in ratings.image_ids], minlength=len(train))
        chosen = np.zeros(len(pairs))
        for a, b in zip(choices.image_a.tolist(), choices.image_b.tolist(), strict=True):
            k = pair_of.get(frozenset((row_of[a], row_of[b])))
            if k is not None:
                chosen[k] += 1
        asks = plan_asks(
            predictor.predict(x),
            predictor.ensemble_predict(x),
            pairs,
            count,
            AskInformation.of(predictor.training),
            ratings_so_far=rated,
            choices_so_far=chosen,
            seed=bench.seed + r,
        )
        images = train[[a.rows[0] for a in asks if a.kind == "rating"]]
        raters = rng.integers(0, world.n_raters, len(images))
        values = world.rate(images, raters, rng)
        duos = np.array([a.rows for a in asks if a.kind == "choice"], dtype=np.int64).reshape(-1, 2)
        a_ids, b_ids = train[duos[:, 0]], train[duos[:, 1]]
        members = rng.integers(0, world.n_raters, len(duos))
        winners = world.choose(a_ids, b_ids, members, rng)
        ratings = RatingPanel.from_columns(
            np.r_[ratings.image_ids, images],
            np.r_[ratings.rater_ids, [f"r{m}" for m in raters]],
            np.r_[ratings.values, values],
        )
        choices = ChoicePanel.from_columns(
            np.r_[choices.image_a, a_ids],
            np.r_[choices.image_b, b_ids],
            np.r_[choices.rater_ids, [f"r{m}" for m in members]],
            np.r_[[{1.0: "a", -1.0: "b", 0.0: "tie"}[o] for o in choices.outcome], winners],
        )
        remaining -= len(asks)
    final = train_predictor(bench.data(ratings, choices), seed=bench.seed).predictor
    asked = f"{len(ratings):,} ratings + {len(choices):,} choices"
    return bench.figures(final.predict(world.embeddings[bench.test])), asked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 clicks over 1,500 images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        action="append",
        metavar="SOURCE=PERCENT[,SOURCE=PERCENT]",
        help="a split of the budget, e.g. choices=25 or ratings=75,choices=25 (repeatable; "
        "default: 0, 25, 50, 75 and 100 %% choices)",
    )
    parser.add_argument("--no-active", action="store_true", help="skip the active-asking row")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    args = parser.parse_args(argv)
    try:
        splits = sorted({parse_split(s) for s in args.split}) if args.split else list(SPLITS)
    except SplitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from threadpoolctl import threadpool_limits

    clicks, images = (3000, 1500) if args.quick else (15_000, 6000)
    started = time.perf_counter()
    print(f"machine: {machine()}; BLAS threads: {args.threads}; seed {args.seed}")
    with threadpool_limits(limits=args.threads):
        for steep, name in (
            (False, "ordinary community (5 % spammers)"),
            (True, "steep private curves, 15 % spammers"),
        ):
            table, extra, goals = run_world(
                clicks,
                images,
                steep=steep,
                seed=args.seed,
                splits=splits,
                active=not args.no_active,
            )
            print_table(
                f"{name}: {clicks:,} clicks, {images:,} images, 20 % of prompts held out",
                [
                    "choices",
                    "ratings + choices",
                    "E: ratings part alone",
                    "P: choices part alone",
                    "ensemble of E and P",
                    "M: joint",
                    "M ratings weight",
                    "M train s",
                ],
                table,
            )
            print(
                "\nEach cell: Spearman vs truth / pairwise accuracy vs truth (within-prompt pairs)."
            )
            print_table(
                f"{name}: baselines and asking", ["trained on", "Spearman / pairwise", ""], extra
            )
            print("\nGoals:")
            for line in goals:
                print(f"- {line}")
    print(f"\nwall time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
