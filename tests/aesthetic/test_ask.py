"""What to ask next, a rating or a choice and which (issue 28, part 2): pure numpy."""

from __future__ import annotations

import numpy as np
import pytest

from dreamrate.aesthetic.ask import (
    Ask,
    AskInformation,
    expected_information,
    plan_asks,
    repeat_factor,
)


def _heads(spread: list[float], k: int = 5) -> np.ndarray:
    """Heads whose scores of image i vary with standard deviation ``spread[i]``."""
    wiggle = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])[:k] / np.sqrt(2.0)
    return np.array(spread)[:, None] * wiggle[None, :]


def test_the_kind_that_teaches_more_per_click_is_asked() -> None:
    scores = np.zeros(4)
    heads = _heads([1.0, 1.0, 1.0, 1.0])
    heads[2] *= -1  # images 2 and 3 disagree most: var(s_2 - s_3) = 4 var(s)
    pairs = np.array([[2, 3]])
    # A rating of any image: information x 1; the choice: information x 1/4 x 4.
    ratings_rich = AskInformation(rating=1.0, choice=0.5)
    first = plan_asks(scores, heads, pairs, 1, ratings_rich)[0]
    assert first.kind == "rating"  # 1.0 x 1  >  0.5 x 1/4 x 4
    choices_rich = AskInformation(rating=0.1, choice=1.0)
    first = plan_asks(scores, heads, pairs, 1, choices_rich)[0]
    assert first.kind == "choice" and set(first.rows) == {2, 3}  # 1/4 x 4 > 0.1


def test_a_pair_already_ordered_surely_or_agreed_on_teaches_little() -> None:
    scores = np.array([0.0, 0.1, 0.0, 5.0, 0.0, 0.0])
    heads = _heads([1, 1, 1, 1, 1, 1])
    heads[[1, 3]] *= -1  # pairs (0, 1) and (2, 3) disagree across heads; (4, 5) agree
    info = AskInformation(rating=None, choice=1.0, link=1.0)
    _, value = expected_information(scores, heads, np.array([[0, 1], [2, 3], [4, 5]]), info)
    assert value[0] > 20 * value[1]  # close scores beat a margin of 5
    assert value[2] == 0.0  # heads that move together are sure of the order


def test_each_image_once_per_pass_then_repeats_worth_less() -> None:
    scores = np.zeros(3)
    heads = _heads([3.0, 2.0, 1.0])
    info = AskInformation(rating=1.0, choice=1.0)
    asks = plan_asks(scores, heads, np.zeros((0, 2)), 5, info)
    assert [a.rows[0] for a in asks[:3]] == [0, 1, 2]  # one pass: each image once, best first
    assert [a.rows[0] for a in asks[3:]] == [0, 1]  # then again, for a third of the value
    assert asks[3].value == pytest.approx(asks[0].value / 3)
    assert repeat_factor(np.array([0, 1, 2])).tolist() == pytest.approx([1, 1 / 3, 1 / 6])
    # Ratings so far count the same way.
    asks = plan_asks(scores, heads, np.zeros((0, 2)), 1, info, ratings_so_far=np.array([2, 0, 0]))
    assert asks[0].rows == (1,)  # 9 / 6 < 4


def test_a_pair_uses_both_its_images() -> None:
    scores = np.array([0.0, 0.0, 2.0, 2.0])  # the pair (0, 3) is fairly sure
    heads = _heads([1, 1, 1, 1])
    heads[1] *= -1
    heads[3] *= -1
    pairs = np.array([[0, 1], [0, 3], [2, 3]])
    asks = plan_asks(scores, heads, pairs, 2, AskInformation(rating=0.01, choice=1.0))
    assert [a.kind for a in asks] == ["choice", "choice"]
    assert {frozenset(a.rows) for a in asks} == {frozenset((0, 1)), frozenset((2, 3))}


def test_a_predictor_of_one_source_splits_the_batch_and_kinds_can_be_limited() -> None:
    scores = np.zeros(40)
    heads = _heads(list(np.linspace(1, 2, 40)))
    pairs = np.array([[i, i + 1] for i in range(0, 40, 2)])
    only_ratings = AskInformation(rating=1.0, choice=None)
    asks = plan_asks(scores, heads, pairs, 10, only_ratings, explore=0.3)
    assert sum(a.kind == "choice" for a in asks) == 3 and len(asks) == 10
    asks = plan_asks(scores, heads, pairs, 6, only_ratings, kinds=("choice",))
    assert {a.kind for a in asks} == {"choice"}
    # Without CV heads nothing is known: the fewest-answered first.
    asks = plan_asks(
        scores,
        None,
        pairs,
        3,
        only_ratings,
        kinds=("rating",),
        ratings_so_far=np.r_[np.ones(37), np.zeros(3)],
    )
    assert sorted(a.rows[0] for a in asks) == [37, 38, 39]


def test_bad_kinds_and_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="kinds must be 'rating' or 'choice', not likes"):
        plan_asks(
            np.zeros(2), None, np.zeros((0, 2)), 1, AskInformation(1.0, 1.0), kinds=("likes",)
        )
    with pytest.raises(ValueError, match="explore must be in"):
        plan_asks(np.zeros(2), None, np.zeros((0, 2)), 1, AskInformation(1.0, 1.0), explore=2)
    assert plan_asks(np.zeros(0), None, np.zeros((0, 2)), 3, AskInformation(1.0, 1.0)) == []


def test_information_is_read_from_a_training_summary() -> None:
    both = {
        "sources": {"ratings": 0.3, "choices": 0.7},
        "rating_information": 0.2,
        "choice_information": 1.5,
        "choice_scale": 2.0,
    }
    assert AskInformation.of(both) == AskInformation(0.2, 1.5, 2.0)
    # Ratings it learnt from but gave no weight: known to teach nothing (never asked).
    ignored = {**both, "sources": {"ratings": 0.0, "choices": 1.0}, "rating_information": 0.0}
    assert AskInformation.of(ignored).rating == 0.0
    ratings_only = {"sources": {"ratings": 1.0}}  # an older or one-source predictor
    assert AskInformation.of(ratings_only) == AskInformation(None, None, 1.0)
    assert Ask("rating", (1,), 0.5).rows == (1,)
