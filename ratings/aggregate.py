"""From many members' ratings to one training target per image (pure numpy, no database).

Two estimates:

* :func:`mean_targets`: the plain per-image mean, what LAION's and Simulacra's predictors
  were trained on (the baseline);
* :func:`rater_aware_targets`: a rater-effects model fitted by alternating least squares.
  Each rater ``j`` is modelled as ``rating = mu + a_j + b_j * u_i + noise_j``: an offset
  (generous or harsh), a scale (uses the whole range or hugs the middle) and a noise level,
  all shrunk towards the average rater so that someone with three ratings stays ordinary.
  Images are then weighted by how much (reliable) evidence they carry, raters by how well
  they agree with everyone else, and raters who look like spam (constant ratings,
  near-random ratings, ratings faster than anyone can look) are down-weighted and listed.

SAC's own README warns that its raters grade on a curve; this is the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "AggregateOptions",
    "RaterEffects",
    "RatingPanel",
    "SpamReason",
    "Targets",
    "mean_targets",
    "rater_aware_targets",
]

SpamReason = str  #: "constant", "random" or "fast"


@dataclass(frozen=True)
class RatingPanel:
    """The ratings to aggregate: one entry per (image, rater), as parallel arrays."""

    image_ids: np.ndarray
    rater_ids: np.ndarray
    values: np.ndarray
    #: Seconds (any epoch) when each rating was made; enables the speed check.
    timestamps: np.ndarray | None = None

    @classmethod
    def from_columns(
        cls,
        image_ids: Sequence[object] | np.ndarray,
        rater_ids: Sequence[object] | np.ndarray,
        values: Sequence[float] | np.ndarray,
        timestamps: Sequence[float] | np.ndarray | None = None,
    ) -> RatingPanel:
        values_arr = np.asarray(values, dtype=np.float64)
        images = np.asarray(image_ids)
        raters = np.asarray(rater_ids)
        if not (len(images) == len(raters) == len(values_arr)):
            raise ValueError("image_ids, rater_ids and values must have the same length")
        if not np.isfinite(values_arr).all():
            raise ValueError("ratings must be finite numbers")
        stamps = None if timestamps is None else np.asarray(timestamps, dtype=np.float64)
        return cls(images, raters, values_arr, stamps)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class AggregateOptions:
    """Knobs of the rater-effects model; the defaults suit 1-10 community ratings."""

    min_ratings: int = 1  #: images with fewer ratings get no target
    iterations: int = 30
    #: Prior strength (in pseudo-ratings) pulling each rater towards offset 0 and scale 1.
    rater_prior: float = 5.0
    #: Prior strength pulling each rater's noise towards the panel's.
    noise_prior: float = 5.0
    #: Weight kept by a rater flagged as spam (0 drops them).
    spam_weight: float = 0.05
    #: Ratings a rater needs before the agreement check can call them random.
    spam_min_ratings: int = 10
    #: Leave-one-out correlation with the consensus below which a rater looks random.
    random_below: float = 0.2
    #: Median seconds between a rater's consecutive ratings below which they look too fast.
    fast_below_s: float = 1.0


@dataclass(frozen=True)
class Targets:
    """One training target per image, with its evidence."""

    image_ids: np.ndarray
    target: np.ndarray
    n_ratings: np.ndarray
    #: Relative confidence in each target in (0, 1]; use as the sample weight.
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass(frozen=True)
class RaterEffects:
    """What the model learnt about each rater (rater-aware targets only)."""

    rater_ids: np.ndarray
    n_ratings: np.ndarray
    offset: np.ndarray  #: added to every rating by this rater, in rating units
    scale: np.ndarray  #: 1 = uses the range like the average rater
    noise: np.ndarray  #: residual standard deviation
    #: Correlation with the consensus of the other raters on shared images (NaN if none).
    agreement: np.ndarray
    weight: np.ndarray  #: relative weight in the consensus (1 / noise², spam down-weighted)
    spam: dict[object, list[SpamReason]] = field(default_factory=dict)


def _index(panel: RatingPanel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    image_ids, image_idx = np.unique(panel.image_ids, return_inverse=True)
    rater_ids, rater_idx = np.unique(panel.rater_ids, return_inverse=True)
    return image_ids, image_idx, rater_ids, rater_idx


def mean_targets(panel: RatingPanel, *, min_ratings: int = 1) -> Targets:
    """The per-image mean rating (every rating weighs the same); the baseline."""
    image_ids, image_idx, _, _ = _index(panel)
    counts = np.bincount(image_idx, minlength=len(image_ids))
    sums = np.bincount(image_idx, weights=panel.values, minlength=len(image_ids))
    keep = counts >= min_ratings
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return Targets(image_ids[keep], means[keep], counts[keep], np.ones(int(keep.sum())))


def _fast_raters(panel: RatingPanel, rater_idx: np.ndarray, n_raters: int, opts: AggregateOptions):
    fast = np.zeros(n_raters, dtype=bool)
    if panel.timestamps is None:
        return fast
    # Only ratings with a time of their own are evidence: NaN marks a rating found by
    # backfill, whose time is when the bot looked, not when the member acted.
    timed = np.isfinite(panel.timestamps)
    order = np.lexsort((panel.timestamps[timed], rater_idx[timed]))
    raters, stamps = rater_idx[timed][order], panel.timestamps[timed][order]
    gaps = np.diff(stamps)
    same = raters[1:] == raters[:-1]
    for j in np.unique(raters[1:][same]):
        rater_gaps = gaps[same & (raters[1:] == j)]
        if len(rater_gaps) + 1 >= opts.spam_min_ratings:
            fast[j] = float(np.median(rater_gaps)) < opts.fast_below_s
    return fast


def rater_aware_targets(
    panel: RatingPanel, options: AggregateOptions | None = None
) -> tuple[Targets, RaterEffects]:
    """Fit the rater-effects model and return image targets and rater effects.

    Targets are on the rating scale of an average rater (mean of all ratings as the
    centre). Images seen only by unreliable raters are pulled towards the centre and get
    a low weight instead of an extreme value.
    """
    opts = options or AggregateOptions()
    if len(panel) == 0:
        raise ValueError("no ratings to aggregate")
    image_ids, i_idx, rater_ids, j_idx = _index(panel)
    n_img, n_rat = len(image_ids), len(rater_ids)
    mu = float(panel.values.mean())
    y = panel.values - mu
    img_counts = np.bincount(i_idx, minlength=n_img).astype(np.float64)
    rat_counts = np.bincount(j_idx, minlength=n_rat).astype(np.float64)

    # Constant raters are known before any fitting.
    r_sum = np.bincount(j_idx, weights=y, minlength=n_rat)
    r_sq = np.bincount(j_idx, weights=y * y, minlength=n_rat)
    r_var = r_sq / rat_counts - (r_sum / rat_counts) ** 2
    constant = (rat_counts >= 5) & (r_var <= 1e-12)
    fast = _fast_raters(panel, j_idx, n_rat, opts)
    random = np.zeros(n_rat, dtype=bool)

    var_y = float(y.var()) or 1.0
    u = np.bincount(i_idx, weights=y, minlength=n_img) / img_counts
    a = np.zeros(n_rat)
    b = np.ones(n_rat)
    noise_var = np.full(n_rat, var_y)
    lam, lam_s = opts.rater_prior, opts.noise_prior

    def spam_mask() -> np.ndarray:
        return constant | fast | random

    def fit_raters() -> None:
        nonlocal a, b, noise_var
        ui = u[i_idx]
        s_u = np.bincount(j_idx, weights=ui, minlength=n_rat)
        s_uu = np.bincount(j_idx, weights=ui * ui, minlength=n_rat)
        s_y = np.bincount(j_idx, weights=y, minlength=n_rat)
        s_yu = np.bincount(j_idx, weights=y * ui, minlength=n_rat)
        # Normal equations with a Gaussian prior a ~ 0, b ~ 1 worth `lam` ratings.
        lam_u = lam * max(float(np.mean(u * u)), 1e-6)
        m00, m01, m11 = rat_counts + lam, s_u, s_uu + lam_u
        r0, r1 = s_y, s_yu + lam_u
        det = m00 * m11 - m01 * m01
        a = (m11 * r0 - m01 * r1) / det
        b = (m00 * r1 - m01 * r0) / det
        resid = y - a[j_idx] - b[j_idx] * ui
        pooled = float(np.mean(resid * resid)) or 1e-6
        sse = np.bincount(j_idx, weights=resid * resid, minlength=n_rat)
        noise_var = np.maximum((sse + lam_s * pooled) / (rat_counts + lam_s), 1e-6)

    def rater_weight() -> np.ndarray:
        return np.where(spam_mask(), opts.spam_weight, 1.0) / noise_var

    def fit_images() -> np.ndarray:
        nonlocal u
        w = rater_weight()
        wj, bj = w[j_idx], b[j_idx]
        num = np.bincount(i_idx, weights=wj * bj * (y - a[j_idx]), minlength=n_img)
        den = np.bincount(i_idx, weights=wj * bj * bj, minlength=n_img)
        prior = 1.0 / max(float(np.var(u)), 1e-6)  # images start at the centre, worth 1/var
        u = num / (den + prior)
        return den + prior

    def anchor() -> None:
        # The model is unchanged by u -> c*u + d with matching a, b; pin the average
        # rater (weighted mean scale 1) and the centre (mean target 0).
        nonlocal u, a, b
        keep = ~spam_mask()
        scale = float(np.average(b[keep], weights=rat_counts[keep])) if keep.any() else 1.0
        if abs(scale) > 1e-6:
            u = u * scale
            b = b / scale
        shift = float(u.mean())
        u = u - shift
        a = a + b * shift

    for it in range(opts.iterations):
        fit_raters()
        fit_images()
        anchor()
        if it == opts.iterations // 3:
            # Once the consensus has settled, call out raters who do not follow it.
            agreement = _agreement(y, i_idx, j_idx, a, b, rater_weight(), u, n_img, n_rat)
            random = (
                (rat_counts >= opts.spam_min_ratings)
                & np.nan_to_num(agreement < opts.random_below, nan=False)
                & ~constant
            )
    fit_raters()
    precision = fit_images()
    agreement = _agreement(y, i_idx, j_idx, a, b, rater_weight(), u, n_img, n_rat)

    keep = img_counts >= opts.min_ratings
    evidence = precision - 1.0 / max(float(np.var(u)), 1e-6)
    reliability = evidence / precision  # share of the estimate that comes from ratings
    weight = np.clip(reliability / max(float(reliability[keep].max(initial=0.0)), 1e-12), 1e-3, 1)
    targets = Targets(image_ids[keep], mu + u[keep], img_counts[keep].astype(int), weight[keep])
    mask = spam_mask()
    spam: dict[object, list[SpamReason]] = {}
    for j in np.flatnonzero(mask):
        reasons = [
            name
            for name, hit in (("constant", constant[j]), ("random", random[j]), ("fast", fast[j]))
            if hit
        ]
        spam[rater_ids[j].item() if hasattr(rater_ids[j], "item") else rater_ids[j]] = reasons
    effects = RaterEffects(
        rater_ids=rater_ids,
        n_ratings=rat_counts.astype(int),
        offset=a,
        scale=b,
        noise=np.sqrt(noise_var),
        agreement=agreement,
        weight=rater_weight(),
        spam=spam,
    )
    return targets, effects


def _agreement(
    y: np.ndarray,
    i_idx: np.ndarray,
    j_idx: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    w: np.ndarray,
    u: np.ndarray,
    n_img: int,
    n_rat: int,
) -> np.ndarray:
    """Pearson correlation of each rater's ratings with the leave-them-out consensus."""
    wj, bj = w[j_idx], b[j_idx]
    contrib_num = wj * bj * (y - a[j_idx])
    contrib_den = wj * bj * bj
    num = np.bincount(i_idx, weights=contrib_num, minlength=n_img)
    den = np.bincount(i_idx, weights=contrib_den, minlength=n_img)
    others_num = num[i_idx] - contrib_num
    others_den = den[i_idx] - contrib_den
    has_others = others_den > 1e-12
    loo = np.where(has_others, others_num / np.where(has_others, others_den, 1.0), np.nan)
    out = np.full(n_rat, np.nan)
    ok = has_others
    jj, yy, cc = j_idx[ok], y[ok], loo[ok]
    n = np.bincount(jj, minlength=n_rat).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mc = (np.bincount(jj, weights=v, minlength=n_rat) / n for v in (yy, cc))
        cov = np.bincount(jj, weights=yy * cc, minlength=n_rat) / n - my * mc
        vy = np.bincount(jj, weights=yy * yy, minlength=n_rat) / n - my * my
        vc = np.bincount(jj, weights=cc * cc, minlength=n_rat) / n - mc * mc
        corr = cov / np.sqrt(vy * vc)
    valid = (n >= 3) & (vy > 1e-12) & (vc > 1e-12)
    out[valid] = corr[valid]
    return out
