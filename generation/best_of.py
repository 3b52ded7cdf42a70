"""Which of a best-of-N job's candidates are posted: a pure decision, tested directly."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["choose_best"]


def choose_best(scores: Sequence[float] | None, flagged: Sequence[bool], keep: int) -> list[bool]:
    """For each candidate, whether it is posted: the ``keep`` best by ``scores``.

    Candidates the safety checker flagged come last whatever their score (they are never
    posted anyway; a safe candidate takes their place). Equal scores keep the seed order.
    Without scores (no predictor active any more) the first ``keep`` safe candidates in
    seed order are posted, as a job without best-of would have been.
    """
    count = len(flagged)
    if scores is not None and len(scores) != count:
        raise ValueError(f"{len(scores)} scores for {count} candidates")

    def rank(i: int) -> tuple[bool, float, int]:
        score = 0.0 if scores is None else -float(scores[i])
        return (bool(flagged[i]), score, i)

    chosen = set(sorted(range(count), key=rank)[:keep])
    return [i in chosen for i in range(count)]
