"""Fitting an aesthetic head on CLIP embeddings, with grouped, held-out validation.

Every figure is out-of-fold: images are split with ``GroupKFold`` by prompt, so images of
one prompt never sit on both sides, and each image is predicted by a model that never saw
its prompt. The baseline (plain per-image means + ``Ridge()``, as Simulacra did) is always
evaluated on the same folds against the same held-out mean ratings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from dreamrate.aesthetic.figures import with_intervals
from dreamrate.aesthetic.predictor import Predictor
from dreamrate.ratings.aggregate import (
    AggregateOptions,
    RaterEffects,
    RatingPanel,
    Targets,
    mean_targets,
    rater_aware_targets,
)
from dreamrate.ratings.training_data import TrainingData, TrainingError, check_embeddings

__all__ = [
    "MIN_GROUPS",
    "MIN_IMAGES",
    "RIDGE_ALPHAS",
    "TrainingResult",
    "grouped_folds",
    "metrics",
    "nested_ridge_alphas",
    "pairwise_accuracy",
    "ridge_baseline",
    "train_predictor",
    "unit_rows",
]

logger = logging.getLogger(__name__)

ModelChoice = Literal["ridge", "mlp", "auto"]

#: Fewest rated images (with embeddings) and prompt groups worth fitting on.
MIN_IMAGES = 20
MIN_GROUPS = 5
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


@dataclass
class TrainingResult:
    predictor: Predictor
    #: {"dreamrate": {...}, "baseline": {...}} out-of-fold metrics vs held-out mean ratings
    metrics: dict[str, dict[str, float]]
    targets: Targets
    mean: Targets
    effects: RaterEffects
    image_ids: np.ndarray  #: the images trained on (targets aligned)
    oof: np.ndarray  #: out-of-fold prediction of each image
    oof_baseline: np.ndarray
    observed: np.ndarray  #: held-out mean rating of each image
    predicted_all: np.ndarray  #: final model on every image
    learning_curve: list[tuple[int, float]]  #: (training images, Spearman)
    summary: dict[str, Any]


def pairwise_accuracy(
    truth: np.ndarray, pred: np.ndarray, *, pairs: int = 200_000, seed: int = 0
) -> float:
    """Share of image pairs with different truth that ``pred`` orders the same way."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    if n < 2:
        return float("nan")
    a, b = rng.integers(0, n, pairs), rng.integers(0, n, pairs)
    dt, dp = truth[a] - truth[b], pred[a] - pred[b]
    valid = dt != 0
    return float(np.mean(np.sign(dt[valid]) == np.sign(dp[valid]))) if valid.any() else float("nan")


def metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    if len(truth) < 3 or np.std(pred) == 0 or np.std(truth) == 0:
        nan = float("nan")
        return {
            "spearman": nan,
            "pearson": nan,
            "mse": float(np.mean((truth - pred) ** 2)),
            "pairwise": nan,
        }
    return {
        "spearman": float(spearmanr(truth, pred).statistic),
        "pearson": float(pearsonr(truth, pred).statistic),
        "mse": float(np.mean((truth - pred) ** 2)),
        "pairwise": pairwise_accuracy(truth, pred),
    }


def _ridge_pipeline(alpha: float = 1.0) -> Any:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    return Pipeline([("normalize", Normalizer()), ("model", Ridge(alpha=alpha))])


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nested_ridge_alphas(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
) -> tuple[list[float], float]:
    """The Ridge penalty for each outer fold, chosen by grouped CV on the other folds only
    (the outer test fold is never looked at), and for the final fit, chosen on all folds.

    Same estimator as ``sklearn.linear_model.Ridge`` on unit rows (unpenalised intercept,
    sample weights), but the normal equations of any set of folds come from per-fold Gram
    matrices (training Gram = total minus the held-out folds'), so every penalty x outer x
    inner fit costs one pass over the data; sklearn's ``GridSearchCV`` refits from scratch
    and took 6 s per fit on 16k images here.
    """
    from scipy.linalg import cho_factor, cho_solve

    xa = np.hstack([unit_rows(x), np.ones((len(x), 1))]).astype(np.float64)
    tests = [test for _, test in splits]
    grams = [(xa[t] * w[t, None]).T @ xa[t] for t in tests]
    moments = [(xa[t] * w[t, None]).T @ y[t] for t in tests]
    penalty = np.eye(xa.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not penalised

    def best(exclude: int | None) -> float:
        folds = [k for k in range(len(tests)) if k != exclude]
        gram = sum(grams[k] for k in folds)
        moment = sum(moments[k] for k in folds)
        errors = np.zeros(len(alphas))
        for k in folds:
            g, m, test = gram - grams[k], moment - moments[k], tests[k]
            for a, alpha in enumerate(alphas):
                resid = xa[test] @ cho_solve(cho_factor(g + alpha * penalty), m) - y[test]
                errors[a] += float(np.sum(w[test] * resid * resid))
        return float(alphas[int(np.argmin(errors))])

    return [best(k) for k in range(len(tests))], best(None)


def ridge_baseline(x: np.ndarray, y: np.ndarray) -> Any:
    """The baseline every predictor is measured against: ``Ridge()`` on unit rows, fitted to
    per-image mean ratings (as Simulacra did)."""
    return _fit(_ridge_pipeline(), x, y, None)


def _mlp_pipeline(seed: int) -> Any:
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    mlp = MLPRegressor(
        hidden_layer_sizes=(256,),
        alpha=0.1,  # strong weight decay: ratings are noisy
        learning_rate_init=1e-3,
        early_stopping=True,
        max_iter=300,
        random_state=seed,
    )
    return Pipeline([("normalize", Normalizer()), ("model", mlp)])


def _fit(pipeline: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> Any:
    return pipeline.fit(x, y, model__sample_weight=w)


def _layers(pipeline: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """The fitted model as dense layers on unit embeddings (``(out, in)`` weights)."""
    model = pipeline.named_steps["model"]
    if hasattr(model, "coefs_"):
        layers = [
            (w.T.astype(np.float32), b.astype(np.float32))
            for w, b in zip(model.coefs_, model.intercepts_, strict=True)
        ]
        return layers, "relu"
    coef = np.asarray(model.coef_, dtype=np.float32).reshape(1, -1)
    return [(coef, np.asarray([model.intercept_], dtype=np.float32).reshape(1))], "none"


def grouped_folds(groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` shuffled (train, test) splits; images of one group never sit on both sides."""
    from sklearn.model_selection import GroupKFold

    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(groups)), groups=groups))


def train_predictor(
    data: TrainingData,
    *,
    model: ModelChoice = "ridge",
    min_ratings: int = 1,
    folds: int = 5,
    seed: int = 0,
    name: str = "dreamrate",
    scale: dict[str, Any] | None = None,
    aggregate: AggregateOptions | None = None,
    ratings_weight: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Aggregate ratings, fit with grouped CV, and return the final predictor and its figures.

    With choices (``data.comparisons``) one head learns from both
    (:func:`dreamrate.aesthetic.train_joint.train_joint`); ``ratings_weight`` in [0, 1]
    fixes the ratings' weight against them (default: chosen by held-out performance on
    both). A source that is empty, or weighs nothing, is left out entirely: the result is
    exactly that of the other source alone.

    Raises
    ------
    TrainingError
        one line: too few ratings (saying how many are needed), bad embeddings, a ratings
        weight outside [0, 1], or a weight of 0 without choices.
    """
    if ratings_weight is not None:
        from dreamrate.aesthetic.joint_fit import check_share

        try:
            ratings_weight = check_share(ratings_weight)
        except ValueError as exc:
            raise TrainingError(f"--ratings-weight: {exc}") from None
    choices = data.comparisons
    if choices is not None and (len(choices) == 0 or ratings_weight == 1.0):
        data = replace(data, comparisons=None)  # ratings alone
    elif ratings_weight == 0.0:
        if choices is None:
            raise TrainingError(
                "--ratings-weight 0 trains on choices alone, and there are no choices"
            )
        data = replace(data, panel=RatingPanel.from_columns([], [], []))  # choices alone
    if data.comparisons is not None:
        if model != "ridge":
            raise TrainingError(
                f"--model {model}: choices train one linear head; use --model ridge with them"
            )
        from dreamrate.aesthetic.train_joint import train_joint

        return train_joint(
            data,
            min_ratings=min_ratings,
            folds=folds,
            seed=seed,
            name=name,
            scale=scale,
            aggregate=aggregate,
            ratings_weight=ratings_weight,
            progress=progress,
        )
    say = progress or (lambda _msg: None)
    x_all = check_embeddings(data.embeddings, None, data.embedding_model)
    opts = aggregate or AggregateOptions(min_ratings=min_ratings)
    if len(data.panel) == 0:
        raise TrainingError(
            f"too few ratings to train: need at least {MIN_IMAGES} images with "
            f">= {opts.min_ratings} rating(s) and an embedding, from at least {MIN_GROUPS} "
            "prompts; have no usable ratings (banned, opted-out and erased members' never count)"
        )
    say("aggregating ratings")
    targets, effects = rater_aware_targets(data.panel, opts)
    mean = mean_targets(data.panel, min_ratings=opts.min_ratings)

    row_of = {int(i): r for r, i in enumerate(data.image_ids.tolist())}
    ids = np.array([i for i in targets.image_ids.tolist() if int(i) in row_of], dtype=np.int64)
    n_groups = len(np.unique(data.groups[[row_of[int(i)] for i in ids]])) if len(ids) else 0
    if len(ids) < MIN_IMAGES or n_groups < MIN_GROUPS:
        raise TrainingError(
            f"too few ratings to train: need at least {MIN_IMAGES} images with "
            f">= {opts.min_ratings} rating(s) and an embedding, from at least {MIN_GROUPS} "
            f"prompts; have {len(ids)} image(s) from {n_groups} prompt(s) "
            f"({len(data.panel)} ratings)"
        )
    rows = np.array([row_of[int(i)] for i in ids])
    x = x_all[rows]
    groups = data.groups[rows]
    pos_t = {int(i): k for k, i in enumerate(targets.image_ids.tolist())}
    pos_m = {int(i): k for k, i in enumerate(mean.image_ids.tolist())}
    y = targets.target[[pos_t[int(i)] for i in ids]]
    w = targets.weight[[pos_t[int(i)] for i in ids]]
    y_mean = mean.target[[pos_m[int(i)] for i in ids]]

    k = min(folds, n_groups)
    splits = grouped_folds(groups, k, seed)
    candidates: dict[str, Callable[[int | None], Any]] = {}
    if model in ("ridge", "auto"):
        fold_alphas, final_alpha = nested_ridge_alphas(x, y, w, splits)
        candidates["ridge"] = lambda fold: _ridge_pipeline(
            final_alpha if fold is None else fold_alphas[fold]
        )
    if model in ("mlp", "auto"):
        candidates["mlp"] = lambda _fold: _mlp_pipeline(seed)

    oof_by: dict[str, np.ndarray] = {}
    fold_models: dict[str, list[Any]] = {}
    for cand, make in candidates.items():
        say(f"cross-validating {cand} on {k} grouped folds")
        oof = np.empty(len(y))
        fold_models[cand] = []
        for fold, (train, test) in enumerate(splits):
            fitted = _fit(make(fold), x[train], y[train], w[train])
            oof[test] = fitted.predict(x[test])
            fold_models[cand].append(fitted)
        oof_by[cand] = oof
    chosen = max(oof_by, key=lambda c: metrics(y_mean, oof_by[c])["spearman"])

    say("cross-validating the baseline (mean ratings + Ridge())")
    oof_base = np.empty(len(y))
    for train, test in splits:
        oof_base[test] = _fit(_ridge_pipeline(), x[train], y_mean[train], None).predict(x[test])

    say(f"fitting {chosen} on all {len(y)} images")
    final = _fit(candidates[chosen](None), x, y, w)
    layers, activation = _layers(final)
    ensemble = None
    if chosen == "ridge":
        fold_layers = [_layers(m)[0][0] for m in fold_models["ridge"]]
        ensemble = (
            np.concatenate([wt for wt, _ in fold_layers]).astype(np.float32),
            np.concatenate([b for _, b in fold_layers]).astype(np.float32),
        )

    curve = _learning_curve(x, y, w, y_mean, splits[0], lambda: candidates[chosen](0), seed)
    result_metrics = {
        "dreamrate": with_intervals(
            metrics(y_mean, oof_by[chosen]), y_mean, oof_by[chosen], groups, seed=seed
        ),
        "baseline": metrics(y_mean, oof_base),
    }
    for cand, oof in oof_by.items():
        if cand != chosen:
            result_metrics[f"{cand} (not chosen)"] = metrics(y_mean, oof)
    final_model = final.named_steps["model"]
    summary = {
        "images": len(ids),
        "prompts": n_groups,
        "ratings": len(data.panel),
        "raters": len(effects.rater_ids),
        "spam_raters": len(effects.spam),
        "min_ratings": opts.min_ratings,
        "folds": k,
        "model": chosen,
        "alpha": float(final_model.alpha)
        if hasattr(final_model, "alpha") and chosen == "ridge"
        else None,
        "sources": {"ratings": 1.0},
        "weights_by": "one source",
        "targets": "rater-aware (ALS offsets/scales, reliability weights)",
        "validation": "GroupKFold by prompt; metrics vs held-out mean ratings",
        "seed": seed,
    }
    predictor = Predictor(
        embedding_model=data.embedding_model,
        dim=int(x.shape[1]),
        layers=layers,
        activation=activation,  # type: ignore[arg-type]
        name=name,
        output=scale or {},
        training=summary,
        metrics=result_metrics,
        ensemble=ensemble,
    )
    return TrainingResult(
        predictor=predictor,
        metrics=result_metrics,
        targets=targets,
        mean=mean,
        effects=effects,
        image_ids=ids,
        oof=oof_by[chosen],
        oof_baseline=oof_base,
        observed=y_mean,
        predicted_all=predictor.predict(x),
        learning_curve=curve,
        summary=summary,
    )


def _learning_curve(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    y_eval: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    make: Callable[[], Any],
    seed: int,
) -> list[tuple[int, float]]:
    """Spearman on one held-out fold when training on growing shares of the other folds."""
    train, test = split
    rng = np.random.default_rng(seed)
    order = rng.permutation(train)
    points = []
    for share in (0.1, 0.25, 0.5, 1.0):
        subset = order[: max(int(len(order) * share), 10)]
        if len(subset) < 10 or len(np.unique(y[subset])) < 2:
            continue
        pred = _fit(make(), x[subset], y[subset], w[subset]).predict(x[test])
        points.append((len(subset), metrics(y_eval[test], pred)["spearman"]))
    return points
