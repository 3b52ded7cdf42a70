"""One linear head from one training set's ratings and choices, everything chosen inside it.

The objective (:mod:`dreamrate.aesthetic.preference`) weighs the two sources by a share
``r`` in [0, 1], the ratings' weight (the choices get ``1 - r``)::

    I * (r * R / I_R + (1 - r) * C / I_C) + alpha / 2 * |w|^2

``R`` and ``C`` are the ratings' and the choices' losses, ``I_R`` and ``I_C`` what each tells
the head (the curvature of its term at a first fit: a rating's weight; a click's
``k^2 p (1 - p)``) and ``I = I_R + I_C``. So ``r`` is the ratings' share of the evidence
whatever the counts, a source that says nothing cannot hide behind a flat loss (coin-flip
clicks have ``k`` near 0), ``r = I_R / I`` is the plain sum ``R + C`` of both likelihoods,
``r = 1`` is ratings alone and ``r = 0`` choices alone.

``r`` and ``alpha`` are chosen together by grouped CV on held-out data of **both** kinds:
each candidate's pooled out-of-fold scores are calibrated to each source (a line for the
ratings, the Bradley-Terry scale for the clicks) and judged by the log-likelihood gain of the
held-out ratings and the held-out clicks together (:func:`held_out_gain`), so neither kind
decides alone. The shares tried are 0, 1 and :data:`ODDS` times the plain sum's odds, then
halfway to the best one's neighbours. :func:`fit_joint` sees only the images it is given
(targets, chooser weights, the choice scale and the CV are all computed from them): called
on an outer training fold, nothing of the test fold reaches its weights.

(A blend of two shares' heads, which holds the plain ensemble of the two single-source heads
as one case, was tried and dropped: chosen on the same held-out likelihood it won the inner
CV more often than it won on unseen prompts.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dreamrate.aesthetic.preference import (
    PreferenceProblem,
    QuadraticCells,
    fit_head,
    fit_link,
    problem_from,
)
from dreamrate.aesthetic.train import grouped_folds
from dreamrate.ratings.aggregate import (
    AggregateOptions,
    RaterEffects,
    RatingPanel,
    Targets,
    rater_aware_targets,
)
from dreamrate.ratings.choices import (
    ChoiceOptions,
    ChoicePanel,
    ChooserEffects,
    chooser_reliability,
)

__all__ = [
    "ALPHAS",
    "ODDS",
    "JointHead",
    "check_share",
    "empty_effects",
    "fit_joint",
    "held_out_gain",
    "ratings_within",
]

#: The ratings' shares tried (the choices get the rest); both ends are single sources.
#: Odds of the ratings' share tried, as multiples of the natural odds (the plain sum of
#: both likelihoods); with the two single sources (shares 0 and 1).
ODDS = (1 / 27, 1 / 9, 1 / 3, 1.0, 3.0, 9.0, 27.0)
ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))


def check_share(value: float, what: str = "ratings weight") -> float:
    """``value`` as a float in [0, 1].

    Raises
    ------
    ValueError
        one line naming ``what``: not a number or outside [0, 1].
    """
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1], not {value!r}") from None
    if not 0.0 <= share <= 1.0:  # NaN fails too
        raise ValueError(
            f"{what} must be in [0, 1] (0: choices only, 1: ratings only), not {value}"
        )
    return share


def empty_effects() -> RaterEffects:
    nothing = np.zeros(0)
    return RaterEffects(nothing, nothing.astype(int), nothing, nothing, nothing, nothing, nothing)


def ratings_within(panel: RatingPanel, image_ids: np.ndarray) -> RatingPanel:
    """The ratings of ``image_ids`` only."""
    keep = np.isin(panel.image_ids, image_ids)
    stamps = None if panel.timestamps is None else panel.timestamps[keep]
    return RatingPanel(panel.image_ids[keep], panel.rater_ids[keep], panel.values[keep], stamps)


@dataclass(frozen=True)
class JointHead:
    """A fitted head and what it learnt about its sources."""

    coef: np.ndarray
    bias: float
    #: The ratings' share of the evidence (1: ratings alone, 0: choices alone).
    ratings_share: float
    #: The share of the plain sum of both likelihoods.
    natural_share: float
    alpha: float
    #: Bradley-Terry scale of the clicks on the head's scores (1 without ratings).
    link: float
    #: Whether ``ratings_share`` was chosen by the inner CV (or given, or forced by a
    #: missing source).
    chosen: bool
    targets: Targets
    effects: RaterEffects
    chooser: ChooserEffects | None
    #: What one more (average) rating adds to the objective's curvature per unit of
    #: ``(x . v)^2``; one more click adds ``choice_information * p (1 - p)`` per unit of
    #: ``((x_a - x_b) . v)^2``. Both in the same units, so they say which click teaches more
    #: (:mod:`dreamrate.aesthetic.ask`).
    rating_information: float
    choice_information: float
    #: Held-out log-likelihood gain (ratings, choices) of each share tried, at its best
    #: penalty; empty when nothing was chosen.
    gains: dict[float, tuple[float, float]] = field(default_factory=dict)

    def predict(self, x_unit: np.ndarray) -> np.ndarray:
        return np.asarray(x_unit, dtype=np.float64) @ self.coef + self.bias


def _weighted_corr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    w = w / w.sum()
    da, db = a - float(w @ a), b - float(w @ b)
    va, vb = float(w @ (da * da)), float(w @ (db * db))
    if va <= 0 or vb <= 0:
        return 0.0
    return float(w @ (da * db)) / float(np.sqrt(va * vb))


def _shares(natural: float) -> list[float]:
    """The shares tried around ``natural``: :data:`ODDS` times its odds, and 0 and 1."""
    if not 0.0 < natural < 1.0:
        return [0.0, 1.0]
    odds = natural / (1.0 - natural)
    return [0.0, *(natural if m == 1.0 else odds * m / (1.0 + odds * m) for m in ODDS), 1.0]


def _halfway(s: float, t: float) -> float:
    """The share halfway between ``s`` and ``t`` in log-odds (in share, next to 0 or 1)."""
    if min(s, t) == 0.0 or max(s, t) == 1.0:
        return (s + t) / 2
    mid = (np.log(s / (1 - s)) + np.log(t / (1 - t))) / 2
    return float(1.0 / (1.0 + np.exp(-mid)))


def held_out_gain(
    p: PreferenceProblem, scores: np.ndarray, clicks: np.ndarray | None = None
) -> tuple[float, float]:
    """Log-likelihood gains over knowing nothing, in nats, of held-out ratings and clicks
    under ``scores`` calibrated to each: ``(ratings, choices)``.

    Ratings: a weighted line through the targets (Gaussian, variance ``sigma^2 / w``), so
    the gain is ``-n / 2 * log(1 - rho^2)`` for the weighted correlation ``rho`` (a negative
    one earns nothing). Clicks (those in ``clicks``, a mask; default all): the Bradley-Terry
    scale of the margins fitted by maximum likelihood, the gain measured against coin flips.
    """
    gain_r = 0.0
    if len(p.rated) >= 3 and p.w.sum() > 0:
        rho = max(_weighted_corr(scores[p.rated], p.y, p.w), 0.0)
        gain_r = -0.5 * len(p.rated) * float(np.log1p(-(min(rho, 1.0 - 1e-9) ** 2)))
    gain_c = 0.0
    keep = (p.c > 0) if clicks is None else (clicks & (p.c > 0))
    if keep.any():
        diff = scores[p.a[keep]] - scores[p.b[keep]]
        spread = float(np.std(diff))
        if spread > 0:
            from scipy.optimize import minimize_scalar

            z, c, t = diff / spread, p.c[keep], p.t[keep]

            def nll(log_k: float) -> float:
                m = np.exp(log_k) * z
                return float(np.sum(c * (np.logaddexp(0.0, m) - t * m)))

            null = float(np.sum(c)) * float(np.log(2.0))
            found = minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded")
            gain_c = max(null - float(found.fun), 0.0)
    return gain_r, gain_c


def fit_joint(
    x: np.ndarray,
    image_ids: np.ndarray,
    groups: np.ndarray,
    ratings: RatingPanel,
    choices: ChoicePanel | None,
    *,
    ratings_share: float | None = None,
    folds: int = 5,
    seed: int = 0,
    aggregate: AggregateOptions | None = None,
    choice_options: ChoiceOptions | None = None,
) -> JointHead:
    """Fit one head on the ratings and clicks of ``image_ids`` (others are ignored).

    Parameters
    ----------
    x
        ``(n, d)`` unit embeddings of ``image_ids``.
    groups
        Prompt of each image; the inner CV never splits one.
    ratings, choices
        Either may be empty (not both); a click counts when both its images are here.
    ratings_share
        The ratings' weight in [0, 1]; default (None): chosen by grouped CV on held-out
        ratings and clicks. A missing source forces 0 or 1.
    """
    opts = aggregate or AggregateOptions()
    image_ids = np.asarray(image_ids, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    local = {int(i): k for k, i in enumerate(image_ids.tolist())}

    # 1. The sources within this set
    panel = ratings_within(ratings, image_ids)
    if choices is not None and len(choices):
        inside = np.isin(choices.image_a, image_ids) & np.isin(choices.image_b, image_ids)
        clicks = choices.subset(inside)
    else:
        clicks = ChoicePanel.from_columns([], [], [], [])
    empty = np.zeros(0)
    targets = Targets(empty.astype(np.int64), empty, empty.astype(int), empty)
    effects = empty_effects()
    if len(panel):
        targets, effects = rater_aware_targets(panel, opts)
    problem = problem_from(
        x,
        local,
        rated_ids=targets.image_ids,
        # The targets' own reliability (it counts each image's ratings and their raters'
        # noise), as the ratings-only head weighs them.
        targets=targets.target,
        weights=targets.weight,
        choices=clicks,
    )
    has_r = problem.has_ratings and float(problem.w.sum()) > 0
    has_c = bool(np.any(problem.t != 0.5))
    if not has_r and not has_c:
        raise ValueError("fit_joint needs ratings or decisive clicks among its images")
    fixed = 1.0 if not has_c else 0.0 if not has_r else ratings_share
    if not has_r:  # no ratings: Bradley-Terry logits, no bias
        problem = problem_from(
            x, local, rated_ids=empty.astype(np.int64), targets=empty, weights=empty, choices=clicks
        )

    # 2. The link between the scales (the Bradley-Terry scale of the clicks on a head of the
    # ratings alone, then on the first joint head) and who chooses reliably: first fits of
    # the plain sum of both likelihoods. When the ratings say nothing the link falls to
    # near 0, the choices' share of the evidence with it, and the CV below still weighs
    # each share on held-out data of both kinds.
    middle = ALPHAS[len(ALPHAS) // 2]
    link, chooser = 1.0, None
    if has_r and has_c:
        coef0, bias0 = fit_head(problem.scaled(1.0, 0.0), middle, 1.0)
        link = fit_link(problem, x @ coef0 + bias0)
    coef0, bias0 = fit_head(problem, middle, link)
    scores0 = x @ coef0 + bias0
    if len(problem.a):
        if has_r and has_c:
            link = fit_link(problem, scores0)
        margin = scores0[problem.a] - scores0[problem.b]
        chooser = chooser_reliability(clicks, margin, choice_options)
        problem = problem.with_click_weights(chooser.weights_of(clicks.rater_ids))
        coef0, bias0 = fit_head(problem, middle, link, init=np.r_[coef0, bias0])
        scores0 = x @ coef0 + bias0

    # What each source tells the head: the curvature of its term at the first fit (a
    # rating: its weight; a click: k^2 p (1 - p) times its chooser's weight). Shares weigh
    # this evidence, so a source that says nothing (coin flips: k near 0) cannot hide behind
    # a flat loss; the plain sum of both likelihoods is the natural share.
    info_r = float(problem.w.sum()) if has_r else 0.0
    info_c = 0.0
    if has_c:
        prob = 1.0 / (1.0 + np.exp(-link * (scores0[problem.a] - scores0[problem.b])))
        info_c = float(np.sum(problem.c * prob * (1 - prob))) * link * link
    natural = info_r / (info_r + info_c)

    def factors(share: float) -> tuple[float, float]:
        rf = share * (info_r + info_c) / info_r if info_r > 0 else 0.0
        cf = (1.0 - share) * (info_r + info_c) / info_c if info_c > 0 else 0.0
        return rf, cf

    # 3. The share and the penalty by grouped CV inside this set (quadratic expansion of the
    # choice term around the first fit: one Cholesky solve per candidate and fold), on a
    # grid of shares around the natural one, then halfway to the best one's neighbours
    n_groups = len(np.unique(groups))
    gains: dict[float, tuple[float, float]] = {}
    tried: dict[float, tuple[float, float]] = {}  # share -> (total gain, best penalty)
    cells = None
    share, alpha = (natural if fixed is None else float(fixed)), middle
    if n_groups >= 3:
        k = min(folds, n_groups)
        fold_of = np.empty(len(image_ids), dtype=np.int64)
        for f, (_, test) in enumerate(grouped_folds(groups, k, seed)):
            fold_of[test] = f
        cells = QuadraticCells(problem, fold_of, scores0, link)
        same_fold = fold_of[problem.a] == fold_of[problem.b]

        def judge(s: float) -> None:
            rf, cf = factors(s)
            systems = [cells.equations(set(range(k)) - {g}, rf, cf) for g in range(k)]
            best: tuple[tuple[float, float], float] | None = None
            for a in ALPHAS:
                oof = np.empty(len(image_ids))
                for g, (gram, moment) in enumerate(systems):
                    coef, bias = cells.solve_equations(gram, moment, a, rf > 0)
                    rows = fold_of == g
                    oof[rows] = x[rows] @ coef + bias
                gain = held_out_gain(problem, oof, same_fold)
                if best is None or sum(gain) > sum(best[0]):
                    best = (gain, a)
            assert best is not None
            gains[s], tried[s] = best[0], (sum(best[0]), best[1])

        if fixed is not None:
            judge(float(fixed))
        else:
            for s in _shares(natural):
                judge(s)
            order = sorted(tried)
            top = order.index(max(tried, key=lambda s: tried[s][0]))
            for near in (
                order[top - 1] if top > 0 else None,
                order[top + 1] if top + 1 < len(order) else None,
            ):
                if near is not None and _halfway(order[top], near) not in tried:
                    judge(_halfway(order[top], near))
        share = max(tried, key=lambda s: tried[s][0])
        alpha = tried[share][1]
        gains = dict(sorted(gains.items()))

    # 4. The exact fit
    rf, cf = factors(share)
    start = None
    if cells is not None:
        start = np.r_[cells.solve(set(range(k)), alpha, rf, cf)]
    coef, bias = fit_head(problem.scaled(rf, cf), alpha, link, init=start)
    if has_r and rf == 0.0:
        # Choices alone set the direction and scale; the ratings still set the centre.
        bias = float(np.average(problem.y - x[problem.rated] @ coef, weights=problem.w))
    return JointHead(
        coef=coef,
        bias=bias,
        ratings_share=float(share),
        natural_share=float(natural),
        alpha=float(alpha),
        link=float(link),
        chosen=fixed is None and bool(gains),
        targets=targets,
        effects=effects,
        chooser=chooser,
        # One more click of either kind, as the objective weighs an average one.
        rating_information=rf * info_r / len(panel) if has_r else 0.0,
        choice_information=(
            cf * link * link * float(problem.c.sum()) / len(clicks) if has_c else 0.0
        ),
        gains=gains,
    )
