"""Training on pairwise choices, alone or with ratings: one linear head, grouped validation.

Folds are ``GroupKFold`` by prompt over images, as for ratings. A click is held out when
both its images lie in the test fold and trains when both lie in the training folds (a click
across the two is used by neither). The penalty of each outer fold is chosen by grouped CV
on the other folds only; every figure is out-of-fold. Pairwise accuracy is measured on
held-out decisive clicks, beside the community's own ceiling: how often one member agrees
with the majority of the others on the same pair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dreamrate.aesthetic.predictor import Predictor
from dreamrate.aesthetic.preference import (
    PreferenceProblem,
    QuadraticCells,
    fit_head,
    fit_link,
    held_out_loss,
    problem_from,
)
from dreamrate.aesthetic.train import (
    MIN_GROUPS,
    MIN_IMAGES,
    TrainingResult,
    grouped_folds,
    metrics,
    ridge_baseline,
    unit_rows,
)
from dreamrate.ratings.aggregate import (
    AggregateOptions,
    RaterEffects,
    Targets,
    mean_targets,
    rater_aware_targets,
)
from dreamrate.ratings.choices import (
    ChoiceOptions,
    ChoicePanel,
    chooser_reliability,
    human_ceiling,
)
from dreamrate.ratings.training_data import TrainingData, TrainingError, check_embeddings

__all__ = ["JOINT_ALPHAS", "MIN_CHOICES", "choice_accuracy", "train_joint"]

#: Fewest decisive (not "can't choose") clicks worth fitting on without ratings.
MIN_CHOICES = 50
JOINT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 6))
#: How much the ratings weigh against the clicks, chosen with the penalty by the inner CV on
#: held-out choices (a rating's Gaussian precision says nothing of a private curve's pull).
RATING_WEIGHTS = (0.125, 0.25, 0.5, 1.0, 2.0)
#: Decisive choices needed before held-out choices judge the ratings' weight.
MIN_CHOICES_TO_WEIGH = 200


def choice_accuracy(choices: ChoicePanel, score_of: dict[int, float]) -> tuple[float, int]:
    """Share of decisive clicks whose chosen image scores higher, over the clicks whose two
    images are both in ``score_of``; and how many clicks that was."""
    hits, n = 0, 0
    for a, b, o in zip(
        choices.image_a.tolist(), choices.image_b.tolist(), choices.outcome.tolist(), strict=True
    ):
        if o == 0 or a not in score_of or b not in score_of:
            continue
        n += 1
        hits += int(np.sign(score_of[a] - score_of[b]) == np.sign(o))
    return (hits / n if n else float("nan")), n


def _empty_effects() -> RaterEffects:
    nothing = np.zeros(0)
    return RaterEffects(nothing, nothing.astype(int), nothing, nothing, nothing, nothing, nothing)


def _bt_baseline(x: np.ndarray, p: PreferenceProblem, rows: np.ndarray) -> np.ndarray:
    """A plain Bradley-Terry logistic regression on embedding differences (no ratings, no
    chooser weights, sklearn's default penalty), scored on ``rows``."""
    from sklearn.linear_model import LogisticRegression

    decisive = p.t != 0.5
    if decisive.sum() < 2 or len(np.unique(p.t[decisive])) < 2:
        return np.zeros(len(rows))
    diff = x[p.a[decisive]] - x[p.b[decisive]]
    label = p.t[decisive].astype(int)
    # Both orders, so the fit has no side bias and needs no intercept.
    model = LogisticRegression(fit_intercept=False, max_iter=1000)
    model.fit(np.vstack([diff, -diff]), np.r_[label, 1 - label])
    return x[rows] @ model.coef_[0]


def train_joint(
    data: TrainingData,
    *,
    min_ratings: int = 1,
    folds: int = 5,
    seed: int = 0,
    name: str = "dreamrate",
    scale: dict[str, Any] | None = None,
    aggregate: AggregateOptions | None = None,
    choice_options: ChoiceOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Fit one linear head on ``data.panel`` (ratings, may be empty) and
    ``data.comparisons`` (choices).

    Raises
    ------
    TrainingError
        one line: too few images, prompts or choices (saying how many are needed).
    """
    say = progress or (lambda _msg: None)
    choices = data.comparisons
    assert choices is not None
    x_all = check_embeddings(data.embeddings, None, data.embedding_model)
    opts = aggregate or AggregateOptions(min_ratings=min_ratings)
    decisive = int(np.count_nonzero(choices.outcome))
    has_ratings = len(data.panel) > 0
    if decisive == 0 and len(choices):
        raise TrainingError(
            "--comparisons: every choice is a tie ('can't choose'); ties alone say nothing "
            "about which image is better"
        )
    if not has_ratings and decisive < MIN_CHOICES:
        raise TrainingError(
            f"too few choices to train: need at least {MIN_CHOICES} decisive choices "
            f"(not ties) without ratings; have {decisive}"
        )

    # 1. Rating targets (rater-aware), when there are ratings
    if has_ratings:
        say("aggregating ratings")
        targets, effects = rater_aware_targets(data.panel, opts)
        mean = mean_targets(data.panel, min_ratings=opts.min_ratings)
        honest = np.array([r not in effects.spam for r in effects.rater_ids.tolist()])
        noise_var = float(np.median(effects.noise[honest] ** 2)) if honest.any() else 1.0
        precision = targets.n_ratings * targets.weight / max(noise_var, 1e-6)
    else:
        empty = np.zeros(0)
        targets = mean = Targets(empty.astype(np.int64), empty, empty.astype(int), empty)
        effects = _empty_effects()
        precision = empty

    # 2. The images: rated or chosen, with an embedding
    row_of = {int(i): r for r, i in enumerate(data.image_ids.tolist())}
    rated_keep = np.array([int(i) in row_of for i in targets.image_ids.tolist()], dtype=bool)
    chosen = {int(i) for i in choices.image_a.tolist()} | {int(i) for i in choices.image_b.tolist()}
    ids = np.array(
        sorted({int(i) for i in targets.image_ids[rated_keep].tolist()} | chosen), dtype=np.int64
    )
    local = {int(i): k for k, i in enumerate(ids.tolist())}
    rows = np.array([row_of[int(i)] for i in ids], dtype=np.int64)
    x = unit_rows(x_all[rows]).astype(np.float64)
    groups = data.groups[rows]
    n_groups = len(np.unique(groups))
    if len(ids) < MIN_IMAGES or n_groups < MIN_GROUPS:
        raise TrainingError(
            f"too few images to train: need at least {MIN_IMAGES} rated or compared images "
            f"with an embedding, from at least {MIN_GROUPS} prompts; have {len(ids)} image(s) "
            f"from {n_groups} prompt(s)"
        )
    problem = problem_from(
        x,
        local,
        rated_ids=targets.image_ids[rated_keep],
        targets=targets.target[rated_keep],
        weights=precision[rated_keep] if has_ratings else precision,
        choices=choices,
    )

    # 3. The link between the scales, and who chooses reliably: a first full fit
    say(f"linking choices to ratings; checking {len(np.unique(choices.rater_ids))} choosers")
    middle = float(np.median(JOINT_ALPHAS))
    link = 1.0
    if has_ratings:
        ratings_only = problem.with_click_weights(np.zeros(len(problem.c)))
        coef0, bias0 = fit_head(ratings_only, middle, 1.0)
        link = fit_link(problem, x @ coef0 + bias0)
    coef0, bias0 = fit_head(problem, middle, link)
    scores0 = x @ coef0 + bias0
    if has_ratings:  # once more, on scores that already heard the choices
        link = fit_link(problem, scores0)
    chooser = chooser_reliability(choices, scores0[problem.a] - scores0[problem.b], choice_options)
    problem = problem.with_click_weights(chooser.weights_of(choices.rater_ids))
    coef0, bias0 = fit_head(problem, middle, link, init=np.r_[coef0, bias0])
    scores0 = x @ coef0 + bias0

    # 4. Grouped folds; each outer fold's penalty chosen on the other folds only, with the
    # quadratic expansion around the full fit (one Cholesky solve per candidate)
    k = min(folds, n_groups)
    splits = grouped_folds(groups, k, seed)
    fold_of = np.empty(len(ids), dtype=np.int64)
    for f, (_, test) in enumerate(splits):
        fold_of[test] = f
    say(f"cross-validating the penalty on {k} grouped folds")
    cells = QuadraticCells(problem, fold_of, scores0, link)
    held_out = [problem.within(fold_of == f) for f in range(k)]

    # With ratings and enough choices, held-out choices also say how much ratings weigh.
    weigh = has_ratings and decisive >= MIN_CHOICES_TO_WEIGH
    grid = [(a, r) for a in JOINT_ALPHAS for r in (RATING_WEIGHTS if weigh else (1.0,))]

    def best(exclude: int | None) -> tuple[float, float]:
        inner = [f for f in range(k) if f != exclude]
        errors = []
        for alpha, weight in grid:
            total = 0.0
            for g in inner:
                coef, bias = cells.solve(set(inner) - {g}, alpha, weight)
                total += held_out_loss(held_out[g], x @ coef + bias, link, choices_only=weigh)
            errors.append(total)
        return grid[int(np.argmin(errors))]

    fold_best = [best(f) if k >= 3 else (middle, 1.0) for f in range(k)]
    final_alpha, final_weight = best(None)

    oof = np.empty(len(ids))
    fold_heads = []
    for f in range(k):  # the exact fit of each outer fold, from its quadratic solution
        train = fold_of != f
        alpha, weight = fold_best[f]
        start = np.r_[cells.solve(set(range(k)) - {f}, alpha, weight)]
        weighted = problem.with_rating_weight(weight).within(train)
        coef, bias = fit_head(weighted, alpha, link, init=start)
        test = ~train
        oof[test] = x[test] @ coef + bias
        fold_heads.append((coef, bias))

    # 5. Baselines on the same folds: mean ratings + Ridge(), or plain Bradley-Terry
    say("cross-validating the baseline")
    oof_base = np.empty(len(ids))
    mean_of = dict(zip(mean.image_ids.tolist(), mean.target.tolist(), strict=True))
    for train, test in splits:
        if has_ratings:
            known = np.array([int(i) in mean_of for i in ids[train]])
            y_m = np.array([mean_of[int(i)] for i in ids[train][known]])
            baseline = ridge_baseline(x_all[rows][train][known], y_m)
            oof_base[test] = baseline.predict(x_all[rows][test])
        else:
            mask = np.zeros(len(ids), dtype=bool)
            mask[train] = True
            oof_base[test] = _bt_baseline(x, problem.within(mask), test)

    say(f"fitting on all {len(ids)} images")
    coef, bias = fit_head(
        problem.with_rating_weight(final_weight), final_alpha, link, init=np.r_[coef0, bias0]
    )

    # 6. Figures: held-out accuracy on unseen prompts' clicks, against the human ceiling
    held = {int(i): float(s) for i, s in zip(ids.tolist(), oof.tolist(), strict=True)}
    same_fold = (
        fold_of[[local[int(i)] for i in choices.image_a]]
        == fold_of[[local[int(i)] for i in choices.image_b]]
    )
    test_choices = choices.subset(same_fold)
    accuracy, n_test = choice_accuracy(test_choices, held)
    base_acc, _ = choice_accuracy(
        test_choices,
        {int(i): float(s) for i, s in zip(ids.tolist(), oof_base.tolist(), strict=True)},
    )
    ceiling, n_ceiling = human_ceiling(choices)
    observed = np.array([mean_of.get(int(i), np.nan) for i in ids])
    rated_rows = np.isfinite(observed)
    result_metrics: dict[str, dict[str, float]] = {
        "dreamrate": {
            **(metrics(observed[rated_rows], oof[rated_rows]) if has_ratings else {}),
            "choice_accuracy": accuracy,
        },
        "baseline": {
            **(metrics(observed[rated_rows], oof_base[rated_rows]) if has_ratings else {}),
            "choice_accuracy": base_acc,
        },
        "human ceiling": {"choice_accuracy": ceiling},
    }
    summary = {
        "images": len(ids),
        "prompts": n_groups,
        "ratings": len(data.panel),
        "raters": len(effects.rater_ids),
        "spam_raters": len(effects.spam),
        "choices": len(choices),
        "decisive_choices": decisive,
        "choosers": len(chooser.rater_ids),
        "spam_choosers": len(chooser.spam),
        "held_out_choices": n_test,
        "ceiling_choices": n_ceiling,
        "choice_scale": link,
        "min_ratings": opts.min_ratings,
        "folds": k,
        "model": "joint" if has_ratings else "bradley-terry",
        "alpha": final_alpha,
        "rating_weight": final_weight,
        "targets": (
            "ratings (rater-aware) and choices (Bradley-Terry), one linear head"
            if has_ratings
            else "choices (Bradley-Terry logits), one linear head"
        ),
        "validation": "GroupKFold by prompt; choices held out when both images are",
        "baseline": "mean ratings + Ridge()" if has_ratings else "plain Bradley-Terry logistic",
        "seed": seed,
    }
    output = dict(scale or {}) if has_ratings else {"scale": "bradley-terry logits"}
    predictor = Predictor(
        embedding_model=data.embedding_model,
        dim=int(x.shape[1]),
        layers=[(coef.astype(np.float32).reshape(1, -1), np.asarray([bias], dtype=np.float32))],
        activation="none",
        name=name,
        output=output,
        training=summary,
        metrics=result_metrics,
        ensemble=(
            np.stack([c for c, _ in fold_heads]).astype(np.float32),
            np.asarray([b for _, b in fold_heads], dtype=np.float32),
        ),
    )
    # The report plots predictions against held-out means; without ratings, against each
    # image's share of wins (the closest thing the clicks give).
    if not has_ratings:
        wins = np.zeros(len(ids))
        seen = np.zeros(len(ids))
        for a, b, t in zip(problem.a.tolist(), problem.b.tolist(), problem.t.tolist(), strict=True):
            wins[a] += t
            wins[b] += 1 - t
            seen[a] += 1
            seen[b] += 1
        observed = wins / np.maximum(seen, 1)
        targets = mean = Targets(ids, observed, seen.astype(int), np.ones(len(ids)))
    return TrainingResult(
        predictor=predictor,
        metrics=result_metrics,
        targets=targets,
        mean=mean,
        effects=effects,
        image_ids=ids,
        oof=oof,
        oof_baseline=oof_base,
        observed=np.nan_to_num(observed, nan=float(np.nanmean(observed))),
        predicted_all=predictor.predict(x_all[rows]),
        learning_curve=[],
        summary=summary,
    )
