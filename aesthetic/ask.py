"""What to ask the community next: a rating of one image or a choice between two, and which.

Every ask costs a member one click, so asks of both kinds are ranked on one scale: the
information the answer is expected to give the predictor. For a linear head that is the
curvature one more answer adds to the training objective, times how unsure the predictor
still is along it (the variance of its cross-validation heads there):

* a rating of image ``i``: ``rating_information * var(s_i)``;
* a choice between ``a`` and ``b``: ``choice_information * p (1 - p) * var(s_a - s_b)``,
  with ``p = sigmoid(k (s_a - s_b))`` (a pair the predictor already orders surely teaches
  little, as does a pair whose heads all agree).

``rating_information`` and ``choice_information`` are what the trained predictor measured
(:class:`dreamrate.aesthetic.joint_fit.JointHead`): an average rating's and click's weight in
its objective, after the weighting its CV chose. So when ratings turned out to say little
(spam, steep private curves) the community is asked for choices, and the other way round. A
predictor that learnt from one source cannot compare the two; it asks for the other kind for
``explore`` of each batch. Answers to an image or pair asked many times teach less each time
(its own unexplained part does not average away), by :func:`repeat_factor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Ask", "AskInformation", "expected_information", "plan_asks", "repeat_factor"]


@dataclass(frozen=True)
class Ask:
    """One ask: ``rows`` holds one candidate row (a rating) or two (a choice, left first)."""

    kind: Literal["rating", "choice"]
    rows: tuple[int, ...]
    #: Expected information of the answer (objective curvature x variance).
    value: float


@dataclass(frozen=True)
class AskInformation:
    """What one answer of each kind adds to the predictor's objective (None: unknown, the
    predictor never learnt from that kind)."""

    rating: float | None
    choice: float | None
    #: Bradley-Terry scale of choices on the predictor's scores.
    link: float = 1.0

    @classmethod
    def of(cls, training: dict[str, Any]) -> AskInformation:
        """From a predictor's training summary (``predictor.training``)."""
        sources = training.get("sources") or {}
        rating = training.get("rating_information")
        choice = training.get("choice_information")
        return cls(
            rating=float(rating) if rating is not None and "ratings" in sources else None,
            choice=float(choice) if choice is not None and "choices" in sources else None,
            link=float(training.get("choice_scale") or 1.0),
        )


def repeat_factor(times: np.ndarray) -> np.ndarray:
    """What the next answer on an image (or pair) already answered ``times`` times is worth
    against the first: ``2 / ((n + 1) (n + 2))`` (1, 1/3, 1/6, ...), as when the answers'
    noise equals the image's own unexplained part."""
    n = np.asarray(times, dtype=np.float64)
    return 2.0 / ((n + 1.0) * (n + 2.0))


def expected_information(
    scores: np.ndarray, heads: np.ndarray, pairs: np.ndarray, info: AskInformation
) -> tuple[np.ndarray, np.ndarray]:
    """Expected information of a rating of each candidate and of a choice on each pair
    (``pairs``: ``(m, 2)`` candidate rows), before repeats; an unknown kind's is its
    variance alone (the caller splits the batch, see :func:`plan_asks`)."""
    heads = np.asarray(heads, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    rating = heads.var(axis=1) * (1.0 if info.rating is None else info.rating)
    if not len(pairs):
        return rating, np.zeros(0)
    margin = scores[pairs[:, 0]] - scores[pairs[:, 1]]
    p = 1.0 / (1.0 + np.exp(-info.link * margin))
    spread = (heads[pairs[:, 0]] - heads[pairs[:, 1]]).var(axis=1)
    choice = spread * p * (1.0 - p) * (1.0 if info.choice is None else info.choice)
    return rating, choice


def plan_asks(
    scores: np.ndarray,
    heads: np.ndarray | None,
    pairs: np.ndarray,
    count: int,
    info: AskInformation,
    *,
    ratings_so_far: np.ndarray | None = None,
    choices_so_far: np.ndarray | None = None,
    kinds: tuple[str, ...] = ("rating", "choice"),
    explore: float = 0.5,
    seed: int = 0,
) -> list[Ask]:
    """Up to ``count`` asks, best first (pure).

    Parameters
    ----------
    scores, heads
        The predictor's score of each candidate image and its CV heads' (``(n, k)``); without
        heads (no ensemble) nothing is known of its uncertainty and every candidate is as
        good: the fewest-answered come first, in a random order.
    pairs
        ``(m, 2)`` candidate pairs for a choice (rows of ``scores``).
    info
        What one answer of each kind adds (:meth:`AskInformation.of`).
    ratings_so_far, choices_so_far
        How often each image was rated and each pair chosen on (default: never).
    kinds
        The kinds that may be asked (``/rate`` asks ratings only, ``/compare`` choices only).
    explore
        Share of the batch given to a kind whose information is unknown.

    Each image is asked about once (in a rating or in a pair) before any is asked again.

    Raises
    ------
    ValueError
        an unknown kind, or ``explore`` outside [0, 1].
    """
    unknown = sorted(set(kinds) - {"rating", "choice"})
    if unknown:
        raise ValueError(f"kinds must be 'rating' or 'choice', not {', '.join(unknown)}")
    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"explore must be in [0, 1], not {explore}")
    n = len(scores)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if count <= 0 or n == 0:
        return []
    rng = np.random.default_rng(seed)
    if heads is None or np.asarray(heads).shape[1] < 2:
        heads = np.zeros((n, 2))
    rating, choice = expected_information(scores, heads, pairs, info)
    rated = np.zeros(n) if ratings_so_far is None else np.asarray(ratings_so_far, dtype=float)
    chosen = np.zeros(len(pairs)) if choices_so_far is None else np.asarray(choices_so_far, float)
    # Ties (no uncertainty known) break towards the fewest answered, then at random.
    base = np.r_[rating, choice] + 1e-12 * (1 + 0.01 * rng.random(n + len(pairs)))
    so_far = np.r_[rated, chosen]
    allowed = np.r_[np.full(n, "rating" in kinds), np.full(len(pairs), "choice" in kinds)]
    members = [(int(i),) for i in range(n)] + [(int(a), int(b)) for a, b in pairs.tolist()]
    is_rating = np.arange(n + len(pairs)) < n
    # A predictor that never saw one kind cannot weigh it against the other: split.
    quota = {"rating": count, "choice": count}
    if set(kinds) == {"rating", "choice"} and (info.rating is None) != (info.choice is None):
        missing = "rating" if info.rating is None else "choice"
        quota[missing] = round(count * explore)
        quota["choice" if missing == "rating" else "rating"] = count - quota[missing]
    asks: list[Ask] = []
    taken = {"rating": 0, "choice": 0}
    in_batch = np.zeros(n + len(pairs))
    # Passes: within one, each image is asked about once; a batch larger than that goes
    # round again, each repeat worth less.
    while len(asks) < count:
        value = np.where(allowed, base * repeat_factor(so_far + in_batch), -np.inf)
        used = np.zeros(n, dtype=bool)
        before = len(asks)
        for c in np.argsort(-value, kind="stable").tolist():
            kind = "rating" if is_rating[c] else "choice"
            rows = members[c]
            if value[c] == -np.inf:
                break
            if taken[kind] >= quota[kind] or used[list(rows)].any():
                continue
            used[list(rows)] = True
            taken[kind] += 1
            in_batch[c] += 1
            if kind == "choice" and rng.random() < 0.5:  # members favour a side; not the order
                rows = rows[::-1]
            asks.append(Ask(kind, rows, float(value[c])))  # type: ignore[arg-type]
            if len(asks) >= count:
                break
        if len(asks) == before:  # nothing left that may be asked
            break
    return asks
