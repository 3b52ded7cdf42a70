"""One linear head from ratings and pairwise choices together.

The head scores an image ``s = w . x + b`` on unit CLIP embeddings, in rating units. Its
objective joins two likelihoods:

- **ratings**: the rater-aware target of each image (:mod:`dreamrate.ratings.aggregate`)
  with Gaussian noise, each rating worth one click (precision = ratings x reliability /
  the typical rater's noise variance);
- **choices**: Bradley-Terry, ``P(a over b) = sigmoid(k (s_a - s_b))``, a tie counting half
  a win for each side, each click weighted by its chooser's reliability
  (:func:`dreamrate.ratings.choices.chooser_reliability`);

plus an L2 penalty on ``w``. ``k`` links the scale of choices to the rating scale; it is
learnt by a one-dimensional Bradley-Terry fit on the scores (:func:`fit_link`) and then held
fixed, since a free ``k`` would let the choices escape the penalty (``k`` grows as ``w``
shrinks). Without ratings there is no scale to link to: ``k`` is 1 and ``b`` 0, so scores
are Bradley-Terry logits.

L-BFGS fits it exactly (both terms reach ``w`` only through per-image scores, so a gradient
costs two products with the embedding matrix). Choosing the penalty takes many fits; they use
the quadratic (one Newton step) approximation of the choice term around a full fit, which
makes every fit one Cholesky solve of sums of per-fold Gram matrices
(:class:`QuadraticCells`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamrate.ratings.choices import ChoicePanel

__all__ = [
    "PreferenceProblem",
    "QuadraticCells",
    "fit_head",
    "fit_link",
    "held_out_loss",
    "problem_from",
]


@dataclass(frozen=True)
class PreferenceProblem:
    """The fit's inputs, as rows of :attr:`x` (the images with an embedding)."""

    x: np.ndarray  #: (n, d) unit rows, float64
    rated: np.ndarray  #: rows with a rating target
    y: np.ndarray  #: their targets (rating units)
    w: np.ndarray  #: their precision weights
    a: np.ndarray  #: row of image a, per click
    b: np.ndarray  #: row of image b, per click
    t: np.ndarray  #: 1 (a chosen), 0 (b chosen), 0.5 (tie)
    c: np.ndarray  #: click weights

    @property
    def has_ratings(self) -> bool:
        return len(self.rated) > 0

    def within(self, rows: np.ndarray) -> PreferenceProblem:
        """Only the ratings of ``rows`` (a boolean mask over images) and the clicks whose two
        images both lie in them."""
        keep_r = rows[self.rated]
        keep_c = rows[self.a] & rows[self.b]
        return PreferenceProblem(
            self.x,
            self.rated[keep_r],
            self.y[keep_r],
            self.w[keep_r],
            self.a[keep_c],
            self.b[keep_c],
            self.t[keep_c],
            self.c[keep_c],
        )

    def with_click_weights(self, c: np.ndarray) -> PreferenceProblem:
        return PreferenceProblem(
            self.x, self.rated, self.y, self.w, self.a, self.b, self.t, np.asarray(c, float)
        )

    def with_rating_weight(self, factor: float) -> PreferenceProblem:
        """The ratings' weights scaled by ``factor`` against the clicks'."""
        return self.scaled(factor, 1.0)

    def scaled(self, rating: float, choice: float) -> PreferenceProblem:
        """The ratings' weights times ``rating`` and the clicks' times ``choice``."""
        return PreferenceProblem(
            self.x, self.rated, self.y, self.w * rating, self.a, self.b, self.t, self.c * choice
        )


def problem_from(
    x_unit: np.ndarray,
    row_of: dict[int, int],
    *,
    rated_ids: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    choices: ChoicePanel | None,
    click_weights: np.ndarray | None = None,
) -> PreferenceProblem:
    """Map image ids to rows; every id must have a row (the caller checked)."""
    rated = np.array([row_of[int(i)] for i in rated_ids], dtype=np.int64)
    if choices is None or len(choices) == 0:
        empty = np.zeros(0, dtype=np.int64)
        a = b = empty
        t = c = np.zeros(0)
    else:
        a = np.array([row_of[int(i)] for i in choices.image_a], dtype=np.int64)
        b = np.array([row_of[int(i)] for i in choices.image_b], dtype=np.int64)
        t = (choices.outcome + 1.0) / 2.0
        c = np.ones(len(choices)) if click_weights is None else np.asarray(click_weights, float)
    return PreferenceProblem(
        np.asarray(x_unit, dtype=np.float64),
        rated,
        np.asarray(targets, float),
        np.asarray(weights, float),
        a,
        b,
        t,
        c,
    )


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _terms(
    p: PreferenceProblem, scores: np.ndarray, k: float
) -> tuple[float, float, np.ndarray, float]:
    """(ratings loss, choices loss, d loss / d scores, d loss / d log k)."""
    grad = np.zeros(len(scores))
    rating_loss = 0.0
    if len(p.rated):
        resid = scores[p.rated] - p.y
        rating_loss = 0.5 * float(np.sum(p.w * resid * resid))
        np.add.at(grad, p.rated, p.w * resid)
    choice_loss, dlogk = 0.0, 0.0
    if len(p.a):
        diff = scores[p.a] - scores[p.b]
        z = k * diff
        choice_loss = float(np.sum(p.c * (_softplus(z) - p.t * z)))
        dz = p.c * (_sigmoid(z) - p.t)
        np.add.at(grad, p.a, dz * k)
        np.add.at(grad, p.b, -dz * k)
        dlogk = float(np.sum(dz * z))
    return rating_loss, choice_loss, grad, dlogk


def fit_head(
    p: PreferenceProblem, alpha: float, k: float, init: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """``(w, b)`` minimising the joint objective with choice scale ``k`` and penalty
    ``alpha / 2 * |w|^2`` (exact, by L-BFGS)."""
    from scipy.optimize import minimize

    d = p.x.shape[1]
    start = np.zeros(d + 1)
    if p.has_ratings:
        start[d] = float(np.average(p.y, weights=p.w)) if p.w.sum() > 0 else float(p.y.mean())
    if init is not None:
        start = init.copy()

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, bias = theta[:d], theta[d] if p.has_ratings else 0.0
        r_loss, c_loss, g_scores, _ = _terms(p, p.x @ coef + bias, k)
        grad = np.empty(d + 1)
        grad[:d] = p.x.T @ g_scores + alpha * coef
        grad[d] = float(g_scores.sum()) if p.has_ratings else 0.0
        return r_loss + c_loss + 0.5 * alpha * float(coef @ coef), grad

    found = minimize(
        objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-7}
    )
    return found.x[:d].copy(), float(found.x[d]) if p.has_ratings else 0.0


def fit_link(p: PreferenceProblem, scores: np.ndarray) -> float:
    """The Bradley-Terry scale ``k`` of the clicks given these scores (1 if undecided)."""
    from scipy.optimize import minimize_scalar

    if not len(p.a):
        return 1.0
    diff = scores[p.a] - scores[p.b]

    def nll(logk: float) -> float:
        z = np.exp(logk) * diff
        return float(np.sum(p.c * (_softplus(z) - p.t * z)))

    found = minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded")
    return float(np.exp(found.x))


class QuadraticCells:
    """Per-fold Gram matrices of the joint objective, with the choice term replaced by its
    quadratic expansion around ``scores0``: ratings of fold f form cell (f, f) and so do
    clicks within fold f; clicks across folds f < g form cell (f, g). A training set of
    folds S sums the cells inside S."""

    def __init__(
        self, p: PreferenceProblem, fold_of: np.ndarray, scores0: np.ndarray, k: float
    ) -> None:
        n, d = p.x.shape
        self.d, self.has_bias = d, p.has_ratings
        self.grams: dict[tuple[int, int], np.ndarray] = {}
        self.moments: dict[tuple[int, int], np.ndarray] = {}

        def add(cell: tuple[int, int], rows: np.ndarray, weights: np.ndarray, target: np.ndarray):
            gram = (rows * weights[:, None]).T @ rows
            moment = (rows * weights[:, None]).T @ target
            if cell in self.grams:
                self.grams[cell] += gram
                self.moments[cell] += moment
            else:
                self.grams[cell], self.moments[cell] = gram, moment

        ones = np.ones((n, 1))
        xa = np.hstack([p.x, ones])
        # Rating cells are kept apart (keyed (-1, f)) so their weight against the clicks
        # can be chosen at solve time.
        for f in np.unique(fold_of[p.rated]).tolist():
            mine = fold_of[p.rated] == f
            add((-1, f), xa[p.rated[mine]], p.w[mine], p.y[mine])
        if len(p.a):
            # One Newton step of the logistic term, as weighted least squares on differences.
            diff0 = scores0[p.a] - scores0[p.b]
            prob = _sigmoid(k * diff0)
            curvature = np.maximum(p.c * k * k * prob * (1 - prob), 1e-12)
            slope = p.c * k * (prob - p.t)
            target = diff0 - slope / curvature
            rows = np.hstack([p.x[p.a] - p.x[p.b], np.zeros((len(p.a), 1))])
            fa, fb = fold_of[p.a], fold_of[p.b]
            lo, hi = np.minimum(fa, fb), np.maximum(fa, fb)
            for f, g in sorted(set(zip(lo.tolist(), hi.tolist(), strict=True))):
                mine = (lo == f) & (hi == g)
                add((f, g), rows[mine], curvature[mine], target[mine])

    def equations(
        self, folds: set[int], rating_weight: float = 1.0, choice_weight: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The normal equations ``(gram, moment)`` of the cells inside ``folds``, the ratings
        weighted ``rating_weight`` times and the clicks ``choice_weight`` times (no penalty)."""
        gram = np.zeros((self.d + 1, self.d + 1))
        moment = np.zeros(self.d + 1)
        for (f, g), cell in self.grams.items():
            if g in folds and (f in folds or f == -1):
                scale = rating_weight if f == -1 else choice_weight
                if scale == 0.0:
                    continue
                gram += scale * cell
                moment += scale * self.moments[(f, g)]
        return gram, moment

    def solve_equations(
        self, gram: np.ndarray, moment: np.ndarray, alpha: float, with_bias: bool = True
    ) -> tuple[np.ndarray, float]:
        """``(w, b)`` of ``gram`` and ``moment`` with penalty ``alpha`` on ``w``; the bias is
        free only ``with_bias`` (and when the problem has ratings)."""
        from scipy.linalg import cho_factor, cho_solve

        penalty = np.full(self.d + 1, alpha)
        # No bias without ratings (a tiny pull keeps the system solvable).
        penalty[-1] = 0.0 if self.has_bias and with_bias else 1.0
        theta = cho_solve(cho_factor(gram + np.diag(penalty)), moment)
        return theta[: self.d], float(theta[-1]) if self.has_bias and with_bias else 0.0

    def solve(
        self,
        folds: set[int],
        alpha: float,
        rating_weight: float = 1.0,
        choice_weight: float = 1.0,
    ) -> tuple[np.ndarray, float]:
        """``(w, b)`` of the quadratic problem on the cells inside ``folds``, the ratings
        weighted ``rating_weight`` times and the clicks ``choice_weight`` times."""
        gram, moment = self.equations(folds, rating_weight, choice_weight)
        return self.solve_equations(gram, moment, alpha, rating_weight > 0)


def held_out_loss(
    p: PreferenceProblem, scores: np.ndarray, k: float, *, choices_only: bool = False
) -> float:
    """The data terms of the objective on held-out ratings and clicks (for choosing the
    penalty); only the clicks' with ``choices_only``."""
    r_loss, c_loss, _, _ = _terms(p, scores, k)
    return c_loss if choices_only else r_loss + c_loss
