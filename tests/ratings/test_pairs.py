"""Choices, pure: which emoji mean what where, how a member's choice follows from their
events, and which pairs are shown next."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from dreamrate.db.models import RatingEventKind as K
from dreamrate.ratings.decisions import ReactionEvent, classify, fits_message, settle_choice
from dreamrate.ratings.pairs import PairPool, choose_pairs
from dreamrate.ratings.scale import RatingScale

SCALE = RatingScale("numbers-3", ("1️⃣", "2️⃣", "3️⃣"), (1.0, 2.0, 3.0))
T0, T1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


def event(emoji: str) -> ReactionEvent:
    return ReactionEvent(added=True, discord_user_id=1, message_id=5, emoji=emoji)


def test_choice_emoji_with_or_without_the_presentation_selector() -> None:
    assert [SCALE.winner_of(e) for e in ("⬅️", "⬅", "➡️", "➡", "🟰")] == [
        "a",
        "a",
        "b",
        "b",
        "tie",
    ]
    assert SCALE.winner_of("2️⃣") is None and SCALE.value_of("⬅️") is None
    assert classify(event("⬅️"), SCALE, None) is None  # needs the message to decide
    # A choice emoji belongs on a comparison post; rating emoji and the flag on one image.
    assert fits_message(event("➡️"), SCALE, comparison=True)
    assert not fits_message(event("➡️"), SCALE, comparison=False)
    assert not fits_message(event("2️⃣"), SCALE, comparison=True)
    assert not fits_message(event("🚩"), SCALE, comparison=True)
    assert fits_message(event("🚩"), SCALE, comparison=False)


def test_latest_choice_wins_and_removing_it_falls_back() -> None:
    assert settle_choice([], SCALE) is None
    assert settle_choice([(K.ADD, "⬅️", T0), (K.ADD, "🟰", T1)], SCALE) == ("tie", T1)
    assert settle_choice([(K.ADD, "⬅️", T0), (K.ADD, "➡️", T1), (K.REMOVE, "➡️", T1)], SCALE) == (
        "a",
        T0,
    )
    assert settle_choice([(K.ADD, "➡️", T0), (K.REMOVE, "➡️", T1)], SCALE) is None
    # Backfill's finds carry no time: nobody knows when the member chose.
    assert settle_choice([(K.BACKFILL_ADD, "➡️", T0)], SCALE) == ("b", None)


def pool(groups: list[str], *, judged=(), comparisons=None) -> PairPool:  # type: ignore[no-untyped-def]
    n = len(groups)
    return PairPool(
        image_ids=np.arange(100, 100 + n, dtype=np.int64),
        groups=groups,
        comparisons=np.zeros(n, np.int64) if comparisons is None else np.array(comparisons),
        judged=frozenset(frozenset(p) for p in judged),
    )


def test_pairs_within_a_prompt_first_each_image_once_never_a_judged_pair() -> None:
    p = pool(["x", "x", "y", "y", "z"], judged=[(100, 101)])
    chosen = choose_pairs(p, 5, seed=0)
    # (100, 101) was judged: y's pair first, then pairs across prompts for what is left.
    assert frozenset(chosen[0]) == {102, 103}
    assert all(frozenset(c) != {100, 101} for c in chosen)
    flat = [i for c in chosen for i in c]
    assert len(flat) == len(set(flat))
    assert choose_pairs(pool(["x"]), 3) == []


def test_compared_least_first_and_the_predictors_doubt_decides() -> None:
    # Without a predictor, the images compared least go first.
    p = pool(["x", "x", "x", "x"], comparisons=[9, 9, 0, 0])
    assert frozenset(choose_pairs(p, 1, seed=1)[0]) == {102, 103}
    # With one, the pair whose order it is least sure of: close scores, heads that disagree.
    p = pool(["x"] * 4)
    scores = np.array([0.0, 5.0, 2.0, 2.05])
    heads = np.stack([scores + d for d in (-0.1, 0.0, 0.1)], axis=1)
    heads[2, 0], heads[3, 0] = 2.2, 1.9  # one head orders 102 and 103 the other way
    assert frozenset(choose_pairs(p, 1, scores=scores, heads=heads, seed=0)[0]) == {102, 103}
    # Which side an image takes is random: members favour a side, the pairs must not.
    sides = {choose_pairs(pool(["x", "x"]), 1, seed=s)[0][0] for s in range(20)}
    assert sides == {100, 101}
