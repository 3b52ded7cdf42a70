"""Who wins the arena: each pair of models' win rate with its 95 % interval.

A judgement is one member's choice on one arena round: a win for one model, or a tie, which
counts half to each (as in Elo and Bradley-Terry practice, so a pair judged all ties sits
at 50 %). The interval is Wilson's score interval on the tie-split win count, which stays
inside [0, 1] and behaves at small counts and at 0 % or 100 %, where the normal
approximation does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Judgement", "PairResult", "pair_results", "wilson_interval"]

Z95 = 1.959963984540054  #: the normal quantile for a two-sided 95 % interval


@dataclass(frozen=True)
class Judgement:
    model_a: str
    model_b: str
    #: ``a``, ``b`` or ``tie``.
    winner: str


@dataclass(frozen=True)
class PairResult:
    first: str
    second: str
    judgements: int
    wins: int  #: judgements the first model won
    losses: int
    ties: int

    @property
    def win_rate(self) -> float:
        """The first model's share, ties counted half."""
        return (self.wins + 0.5 * self.ties) / self.judgements if self.judgements else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins + 0.5 * self.ties, self.judgements)


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for ``successes`` of ``n`` (NaNs when there is no trial)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def pair_results(judgements: Iterable[Judgement]) -> list[PairResult]:
    """One result per unordered pair of models, the alphabetically first model first."""
    tallies: dict[tuple[str, str], list[int]] = {}
    for j in judgements:
        if j.model_a == j.model_b or j.winner not in ("a", "b", "tie"):
            continue
        first, second = sorted((j.model_a, j.model_b))
        tally = tallies.setdefault((first, second), [0, 0, 0])
        if j.winner == "tie":
            tally[2] += 1
        elif (j.winner == "a") == (j.model_a == first):
            tally[0] += 1
        else:
            tally[1] += 1
    return [
        PairResult(first, second, wins + losses + ties, wins, losses, ties)
        for (first, second), (wins, losses, ties) in sorted(tallies.items())
    ]
