"""Training on pairwise choices, alone or with ratings: one linear head, grouped validation.

Folds are ``GroupKFold`` by prompt over images, as for ratings. A click is held out when
both its images lie in the test fold and trains when both lie in the training folds (a click
across the two is used by neither). Each outer fold's head is fitted by
:func:`dreamrate.aesthetic.joint_fit.fit_joint` on the training folds alone: their rating
targets, chooser weights, choice scale, and the two sources' weights and penalty chosen by
grouped CV inside them, so the test fold never reaches a choice; every figure is
out-of-fold. Pairwise accuracy is measured on held-out decisive clicks, beside the
community's own ceiling: how often one member agrees with the majority of the others on the
same pair. Figures carry 95 % intervals (a bootstrap over prompts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dreamrate.aesthetic.figures import grouped_interval, proportion_interval, with_intervals
from dreamrate.aesthetic.joint_fit import JointHead, fit_joint
from dreamrate.aesthetic.predictor import Predictor
from dreamrate.aesthetic.train import (
    MIN_GROUPS,
    MIN_IMAGES,
    TrainingResult,
    grouped_folds,
    metrics,
    ridge_baseline,
    unit_rows,
)
from dreamrate.ratings.aggregate import AggregateOptions, Targets, mean_targets
from dreamrate.ratings.choices import ChoiceOptions, ChoicePanel, human_ceiling
from dreamrate.ratings.training_data import TrainingData, TrainingError, check_embeddings

__all__ = ["MIN_CHOICES", "choice_accuracy", "sources_line", "train_joint"]

#: Fewest decisive (not "can't choose") clicks worth fitting on without ratings.
MIN_CHOICES = 50


def choice_accuracy(choices: ChoicePanel, score_of: dict[int, float]) -> tuple[float, int]:
    """Share of decisive clicks whose chosen image scores higher, over the clicks whose two
    images are both in ``score_of``; and how many clicks that was."""
    hits, n = _choice_hits(choices, score_of)
    return (float(hits.mean()) if n else float("nan")), n


def _choice_hits(choices: ChoicePanel, score_of: dict[int, float]) -> tuple[np.ndarray, int]:
    """1/0 per decisive click with both images scored (chosen image higher or not)."""
    hits = []
    for a, b, o in zip(
        choices.image_a.tolist(), choices.image_b.tolist(), choices.outcome.tolist(), strict=True
    ):
        if o == 0 or a not in score_of or b not in score_of:
            continue
        hits.append(float(np.sign(score_of[a] - score_of[b]) == np.sign(o)))
    return np.asarray(hits), len(hits)


def _bt_baseline(x: np.ndarray, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Coefficients of a plain Bradley-Terry logistic regression on embedding differences
    (no ratings, no chooser weights, sklearn's default penalty)."""
    from sklearn.linear_model import LogisticRegression

    decisive = t != 0.5
    if decisive.sum() < 2 or len(np.unique(t[decisive])) < 2:
        return np.zeros(x.shape[1])
    diff = x[a[decisive]] - x[b[decisive]]
    label = t[decisive].astype(int)
    # Both orders, so the fit has no side bias and needs no intercept.
    model = LogisticRegression(fit_intercept=False, max_iter=1000)
    model.fit(np.vstack([diff, -diff]), np.r_[label, 1 - label])
    return model.coef_[0]


def sources_line(summary: dict[str, Any]) -> str:
    """One line naming what the head learnt from and how much each source weighs."""
    sources = summary.get("sources") or {}
    parts = [f"{name} {weight:.2f}" for name, weight in sources.items()]
    how = summary.get("weights_by", "")
    return ("; ".join(parts) + (f" ({how})" if how else "")) if parts else ""


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
    ratings_weight: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Fit one linear head on ``data.panel`` (ratings, may be empty) and
    ``data.comparisons`` (choices).

    ``ratings_weight`` (in [0, 1]) fixes the ratings' weight against the choices; by default
    each fit chooses it by grouped CV on held-out ratings and choices.

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
    if decisive == 0 and len(choices):
        raise TrainingError(
            "--comparisons: every choice is a tie ('can't choose'); ties alone say nothing "
            "about which image is better"
        )
    mean = mean_targets(data.panel, min_ratings=opts.min_ratings)
    row_of = {int(i): r for r, i in enumerate(data.image_ids.tolist())}
    rated = {int(i) for i in mean.image_ids.tolist() if int(i) in row_of}
    has_ratings = bool(rated)
    if not has_ratings and decisive < MIN_CHOICES:
        raise TrainingError(
            f"too few choices to train: need at least {MIN_CHOICES} decisive choices "
            f"(not ties) without ratings; have {decisive}"
        )

    # 1. The images: rated (enough times) or chosen, with an embedding
    chosen = {int(i) for i in choices.image_a.tolist()} | {int(i) for i in choices.image_b.tolist()}
    ids = np.array(sorted(rated | chosen), dtype=np.int64)
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
    # Ratings that give no image a target (too few each, or no embedding) weigh nothing.
    panel = data.panel if has_ratings else data.panel.__class__.from_columns([], [], [])
    share = None if ratings_weight is None else float(ratings_weight)

    def fit(mask: np.ndarray) -> JointHead:
        return fit_joint(
            x[mask],
            ids[mask],
            groups[mask],
            panel,
            choices,
            ratings_share=share,
            folds=folds,
            seed=seed,
            aggregate=opts,
            choice_options=choice_options,
        )

    # 2. Grouped outer folds: each head fitted, and its weights chosen, on its training folds
    k = min(folds, n_groups)
    splits = grouped_folds(groups, k, seed)
    fold_of = np.empty(len(ids), dtype=np.int64)
    for f, (_, test) in enumerate(splits):
        fold_of[test] = f
    # Folds may weigh the sources differently, and so score on different scales: each fold's
    # head is standardised over its own training images before its held-out scores are
    # pooled (and, as the predictor's CV ensemble, put on the final head's scale below).
    oof = np.empty(len(ids))
    fold_heads: list[JointHead] = []
    standard: list[tuple[np.ndarray, float]] = []  # (coef, bias) with unit spread
    for f in range(k):
        say(f"fold {f + 1} of {k}: weighing the sources and fitting on the other folds")
        train = fold_of != f
        head = fit(train)
        on_train = x[train] @ head.coef
        spread = float(np.std(on_train)) or 1.0
        coef_f = head.coef / spread
        bias_f = -float(np.mean(on_train)) / spread
        oof[~train] = x[~train] @ coef_f + bias_f
        fold_heads.append(head)
        standard.append((coef_f, bias_f))

    # 3. Baselines on the same folds: mean ratings + Ridge(), or plain Bradley-Terry
    say("cross-validating the baseline")
    oof_base = np.empty(len(ids))
    mean_of = dict(zip(mean.image_ids.tolist(), mean.target.tolist(), strict=True))
    a = np.array([local[int(i)] for i in choices.image_a], dtype=np.int64)
    b = np.array([local[int(i)] for i in choices.image_b], dtype=np.int64)
    t = (choices.outcome + 1.0) / 2.0
    for train, test in splits:
        if has_ratings:
            known = np.array([int(i) in mean_of for i in ids[train]])
            y_m = np.array([mean_of[int(i)] for i in ids[train][known]])
            baseline = ridge_baseline(x_all[rows][train][known], y_m)
            oof_base[test] = baseline.predict(x_all[rows][test])
        else:
            inside = np.isin(a, train) & np.isin(b, train)
            oof_base[test] = x[test] @ _bt_baseline(x, a[inside], b[inside], t[inside])

    say(f"weighing the sources and fitting on all {len(ids)} images")
    final = fit(np.ones(len(ids), dtype=bool))
    # The pooled held-out scores on the final head's scale (for the plots and the MSE; the
    # ranking figures do not depend on it).
    final_scores = x @ final.coef + final.bias
    final_spread, final_centre = float(np.std(final_scores)), float(np.mean(final_scores))
    oof = oof * final_spread + final_centre

    # 4. Figures: held-out accuracy on unseen prompts' clicks against the human ceiling,
    # Spearman against held-out mean ratings; 95 % intervals by prompt
    held = dict(zip(ids.tolist(), oof.tolist(), strict=True))
    same_fold = fold_of[a] == fold_of[b]
    test_choices = choices.subset(same_fold)
    hits, n_test = _choice_hits(test_choices, held)
    accuracy = float(hits.mean()) if n_test else float("nan")
    base_acc, _ = choice_accuracy(
        test_choices, dict(zip(ids.tolist(), oof_base.tolist(), strict=True))
    )
    decisive_test = test_choices.outcome != 0
    click_groups = groups[a[same_fold][decisive_test]]
    acc_low, acc_high = grouped_interval(
        click_groups, lambda r: float(hits[r].mean()) if len(r) else float("nan"), seed=seed
    )
    ceiling, n_ceiling = human_ceiling(choices)
    ceil_low, ceil_high = proportion_interval(ceiling, n_ceiling)
    observed = np.array([mean_of.get(int(i), np.nan) for i in ids])
    rated_rows = np.isfinite(observed)
    ours: dict[str, float] = {}
    if has_ratings:
        ours = with_intervals(
            metrics(observed[rated_rows], oof[rated_rows]),
            observed[rated_rows],
            oof[rated_rows],
            groups[rated_rows],
            seed=seed,
        )
    ours.update(
        choice_accuracy=accuracy, choice_accuracy_low=acc_low, choice_accuracy_high=acc_high
    )
    result_metrics: dict[str, dict[str, float]] = {
        "dreamrate": ours,
        "baseline": {
            **(metrics(observed[rated_rows], oof_base[rated_rows]) if has_ratings else {}),
            "choice_accuracy": base_acc,
        },
        "human ceiling": {
            "choice_accuracy": ceiling,
            "choice_accuracy_low": ceil_low,
            "choice_accuracy_high": ceil_high,
        },
    }
    chooser = final.chooser
    if share is not None:
        weights_by = "given (--ratings-weight)"
    elif has_ratings and decisive and final.chosen:
        weights_by = "grouped CV on held-out ratings and choices together"
    else:
        weights_by = "one source"
    sources = {}
    if has_ratings:
        sources["ratings"] = round(final.ratings_share, 4)
    if decisive:
        sources["choices"] = round(1.0 - final.ratings_share if has_ratings else 1.0, 4)
    summary = {
        "images": len(ids),
        "prompts": n_groups,
        "ratings": len(data.panel),
        "raters": len(final.effects.rater_ids),
        "spam_raters": len(final.effects.spam),
        "choices": len(choices),
        "decisive_choices": decisive,
        "choosers": 0 if chooser is None else len(chooser.rater_ids),
        "spam_choosers": 0 if chooser is None else len(chooser.spam),
        "held_out_choices": n_test,
        "ceiling_choices": n_ceiling,
        "choice_scale": final.link,
        "min_ratings": opts.min_ratings,
        "folds": k,
        "model": "joint" if has_ratings else "bradley-terry",
        "alpha": final.alpha,
        "sources": sources,
        "weights_by": weights_by,
        "ratings_weight": final.ratings_share if has_ratings else 0.0,
        "natural_ratings_weight": final.natural_share,
        "fold_ratings_weights": [round(h.ratings_share, 4) for h in fold_heads],
        "rating_information": final.rating_information,
        "choice_information": final.choice_information,
        "targets": (
            "ratings (rater-aware) and choices (Bradley-Terry), one linear head"
            if has_ratings
            else "choices (Bradley-Terry logits), one linear head"
        ),
        "validation": "GroupKFold by prompt; choices held out when both images are; "
        "each fold's weights chosen inside its training folds",
        "baseline": "mean ratings + Ridge()" if has_ratings else "plain Bradley-Terry logistic",
        "seed": seed,
    }
    output = dict(scale or {}) if has_ratings else {"scale": "bradley-terry logits"}
    predictor = Predictor(
        embedding_model=data.embedding_model,
        dim=int(x.shape[1]),
        layers=[
            (
                final.coef.astype(np.float32).reshape(1, -1),
                np.asarray([final.bias], dtype=np.float32),
            )
        ],
        activation="none",
        name=name,
        output=output,
        training=summary,
        metrics=result_metrics,
        ensemble=(
            np.stack([c * final_spread for c, _ in standard]).astype(np.float32),
            np.asarray([b * final_spread + final_centre for _, b in standard], dtype=np.float32),
        ),
    )
    targets, effects = final.targets, final.effects
    # The report plots predictions against held-out means; without ratings, against each
    # image's share of wins (the closest thing the clicks give).
    if not has_ratings:
        wins = np.zeros(len(ids))
        seen = np.zeros(len(ids))
        np.add.at(wins, a, t)
        np.add.at(wins, b, 1 - t)
        np.add.at(seen, a, 1.0)
        np.add.at(seen, b, 1.0)
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
