"""Which best-of-N candidates are posted: the pure decision."""

from __future__ import annotations

import pytest

from dreamrate.generation.best_of import choose_best


def test_the_best_scores_are_posted_and_flagged_candidates_never() -> None:
    scores = [0.1, 0.9, 0.5, 0.95, 0.2, 0.7]
    assert choose_best(scores, [False] * 6, 2) == [False, True, False, True, False, False]
    # The best one was flagged by the safety checker: the next safe one takes its place.
    flagged = [False, False, False, True, False, False]
    assert choose_best(scores, flagged, 2) == [False, True, False, False, False, True]


def test_ties_keep_the_seed_order_and_no_scores_keep_the_first() -> None:
    assert choose_best([1.0, 1.0, 1.0], [False] * 3, 1) == [True, False, False]
    assert choose_best(None, [False, False, False, False], 2) == [True, True, False, False]
    assert choose_best(None, [True, False, False, False], 2) == [False, True, True, False]
    with pytest.raises(ValueError, match="2 scores for 3 candidates"):
        choose_best([1.0, 2.0], [False] * 3, 1)
