"""Pairwise choices ("which of these two?"): the panel, each chooser's reliability, and the
community's own ceiling (how often one member agrees with the others on a pair).

Pure numpy, like :mod:`dreamrate.ratings.aggregate`: the fit that uses these lives in
:mod:`dreamrate.aesthetic.preference`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "WINNERS",
    "ChoiceOptions",
    "ChoicePanel",
    "ChooserEffects",
    "chooser_reliability",
    "human_ceiling",
]

#: The ``winner`` values of the comparisons schema and their signs (a over b = +1).
WINNERS = {"a": 1.0, "b": -1.0, "tie": 0.0}


@dataclass(frozen=True)
class ChoicePanel:
    """One entry per click: ``outcome`` +1 (a chosen), -1 (b chosen) or 0 (can't choose)."""

    image_a: np.ndarray
    image_b: np.ndarray
    rater_ids: np.ndarray
    outcome: np.ndarray

    @classmethod
    def from_columns(
        cls,
        image_a: Sequence[object] | np.ndarray,
        image_b: Sequence[object] | np.ndarray,
        rater_ids: Sequence[object] | np.ndarray,
        winners: Sequence[str] | np.ndarray,
    ) -> ChoicePanel:
        """From the file's columns; ``winners`` are ``"a"``, ``"b"`` or ``"tie"``.

        Raises
        ------
        ValueError
            one line: lengths differ, an unknown winner, an image compared with itself.
        """
        a, b = np.asarray(image_a, dtype=np.int64), np.asarray(image_b, dtype=np.int64)
        raters, names = np.asarray(rater_ids).astype(str), np.asarray(winners, dtype=object)
        if not (len(a) == len(b) == len(raters) == len(names)):
            raise ValueError("image_a, image_b, rater_id and winner must have the same length")
        unknown = sorted({str(w) for w in names.tolist()} - set(WINNERS))
        if unknown:
            raise ValueError(
                f"winner must be 'a', 'b' or 'tie', not {', '.join(map(repr, unknown[:3]))}"
            )
        same = np.flatnonzero(a == b)
        if len(same):
            raise ValueError(
                f"{len(same)} row(s) compare an image with itself (first: image {int(a[same[0]])})"
            )
        outcome = np.array([WINNERS[str(w)] for w in names.tolist()], dtype=np.float64)
        return cls(a, b, raters, outcome)

    def __len__(self) -> int:
        return len(self.outcome)

    def subset(self, keep: np.ndarray) -> ChoicePanel:
        return ChoicePanel(
            self.image_a[keep], self.image_b[keep], self.rater_ids[keep], self.outcome[keep]
        )


@dataclass(frozen=True)
class ChoiceOptions:
    """When a chooser looks unreliable, and what weight they keep."""

    #: Decisive choices a chooser needs before either check can flag them.
    min_choices: int = 20
    #: Share of "a" (or of "b") at or above which a chooser always picks one side.
    one_side_share: float = 0.9
    #: How much likelier a chooser's agreement must be under coin flips than under the
    #: panel's typical agreement before they are called random (a Bayes factor).
    random_odds: float = 10.0
    #: Weight kept by a flagged chooser.
    spam_weight: float = 0.05


@dataclass(frozen=True)
class ChooserEffects:
    """Each chooser's count, agreement with the fitted order and weight."""

    rater_ids: np.ndarray
    n_choices: np.ndarray
    agreement: np.ndarray  #: share of decisive choices ordered like the model (NaN if none)
    weight: np.ndarray
    spam: dict[str, list[str]] = field(default_factory=dict)

    def weights_of(self, raters: np.ndarray) -> np.ndarray:
        lookup = dict(zip(self.rater_ids.tolist(), self.weight.tolist(), strict=True))
        return np.array([lookup.get(r, 1.0) for r in raters.tolist()], dtype=np.float64)


def chooser_reliability(
    panel: ChoicePanel, margin: np.ndarray, options: ChoiceOptions | None = None
) -> ChooserEffects:
    """Flag choosers who always take one side (the left image, say) or whose choices agree
    with the fitted order (``margin`` = score of a minus score of b, per click) no better
    than chance; they keep :attr:`ChoiceOptions.spam_weight`."""
    opts = options or ChoiceOptions()
    raters, index = np.unique(panel.rater_ids, return_inverse=True)
    decisive = panel.outcome != 0
    n = np.bincount(index[decisive], minlength=len(raters)).astype(np.int64)
    chose_a = np.bincount(index[decisive & (panel.outcome > 0)], minlength=len(raters))
    agrees = decisive & (np.sign(margin) == np.sign(panel.outcome))
    agreed = np.bincount(index[agrees], minlength=len(raters))
    with np.errstate(invalid="ignore", divide="ignore"):
        share_a = chose_a / n
        agreement = agreed / n
    enough = n >= opts.min_choices
    # The panel's typical agreement; a chooser is "random" when coin flips explain their
    # hits ``random_odds`` times better than it does (so few choices never suffice).
    typical = float(np.nanmedian(agreement[enough])) if enough.any() else float("nan")
    typical = min(max(typical, 0.55), 0.99) if np.isfinite(typical) else 0.55
    log_odds = agreed * np.log(0.5 / typical) + (n - agreed) * np.log(0.5 / (1 - typical))
    spam: dict[str, list[str]] = {}
    for j, rater in enumerate(raters.tolist()):
        if not enough[j]:
            continue
        reasons = []
        if share_a[j] >= opts.one_side_share or share_a[j] <= 1 - opts.one_side_share:
            reasons.append("always the same side")
        if log_odds[j] > np.log(opts.random_odds):
            reasons.append("random choices")
        if reasons:
            spam[str(rater)] = reasons
    weight = np.array([opts.spam_weight if str(r) in spam else 1.0 for r in raters.tolist()])
    return ChooserEffects(raters, n, agreement, weight, spam)


def human_ceiling(panel: ChoicePanel) -> tuple[float, int]:
    """How often one member's decisive choice agrees with the majority of the others who
    judged the same pair (either order), and how many such choices there were; NaN when no
    pair was judged decisively by two or more members."""
    lo, hi = np.minimum(panel.image_a, panel.image_b), np.maximum(panel.image_a, panel.image_b)
    # Outcome as "lo chosen over hi": +1 / -1, whichever side each image was shown on.
    towards_lo = np.where(panel.image_a == lo, panel.outcome, -panel.outcome)
    decisive = towards_lo != 0
    keys = lo[decisive].astype(np.int64) * (int(hi.max(initial=0)) + 1) + hi[decisive]
    votes = towards_lo[decisive]
    _, pair, counts = np.unique(keys, return_inverse=True, return_counts=True)
    totals = np.bincount(pair, weights=votes)
    others = totals[pair] - votes  # the others' net vote on this pair
    judged = (counts[pair] >= 2) & (others != 0)
    if not judged.any():
        return float("nan"), 0
    return float(np.mean(np.sign(others[judged]) == votes[judged])), int(judged.sum())
