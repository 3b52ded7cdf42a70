"""Who wins the arena: each pair of models' win rate with its 95 % interval; and how much a
model's renders changed: a mean and a paired gain with Student's t interval, a diversity figure.

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

__all__ = [
    "Estimate",
    "Judgement",
    "PairResult",
    "diversity_bits",
    "mean_interval",
    "pair_results",
    "paired_gain",
    "wilson_interval",
]

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


@dataclass(frozen=True)
class Estimate:
    """A mean with its two-sided interval, over ``n`` values."""

    value: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> Estimate:
    """The mean of ``values`` with Student's t interval (NaN bounds below two values)."""
    from scipy.stats import t

    data = [float(v) for v in values]
    n = len(data)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(data) / n
    if n < 2:
        return Estimate(mean, math.nan, math.nan, n)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def paired_gain(
    before: Iterable[float], after: Iterable[float], confidence: float = 0.95
) -> Estimate:
    """``after - before`` over pairs (the same prompt and seed rendered by two models): the
    pairing takes out what the prompt and seed alone decide, so the interval is tight."""
    first, second = list(before), list(after)
    if len(first) != len(second):
        raise ValueError(f"paired values differ in number: {len(first)} and {len(second)}")
    return mean_interval((b - a for a, b in zip(first, second, strict=True)), confidence)


def diversity_bits(labels: Iterable[object]) -> float:
    """Shannon entropy of ``labels`` in bits: 0 when every render looks alike, log2(k) when
    k looks are equally common."""
    counts: dict[object, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    total = sum(counts.values())
    return -math.fsum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
