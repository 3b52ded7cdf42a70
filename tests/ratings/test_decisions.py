"""What a reaction means and how ratings follow from the log: the pure rules, directly."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from dreamrate.db.models import RatingEventKind as K
from dreamrate.ratings.decisions import (
    Outcome,
    ReactionEvent,
    classify,
    decide,
    event_kind,
    reconcile_plan,
    settle_plan,
    wanted_reactions,
)
from dreamrate.ratings.scale import RatingScale

SCALE = RatingScale("numbers-3", ("1️⃣", "2️⃣", "3️⃣"), (1.0, 2.0, 3.0))
BOT = 99


def event(emoji: str, user: int = 1, added: bool = True) -> ReactionEvent:
    return ReactionEvent(added=added, discord_user_id=user, message_id=5, emoji=emoji)


def test_classify_and_decide() -> None:
    assert classify(event("2️⃣", user=BOT), SCALE, BOT) is Outcome.BOT
    assert classify(event("👍"), SCALE, BOT) is Outcome.NOT_A_RATING
    assert classify(event("🚩"), SCALE, BOT) is None
    assert classify(event("2️⃣"), SCALE, BOT) is None
    kwargs = {"banned": False, "opted_out": False}
    assert decide(event("2️⃣"), SCALE, image_id=None, **kwargs) is Outcome.NOT_AN_IMAGE
    assert decide(event("2️⃣"), SCALE, image_id=7, banned=True, opted_out=False) is Outcome.BANNED
    assert decide(event("2️⃣"), SCALE, image_id=7, banned=False, opted_out=True) is Outcome.OPTED_OUT
    assert decide(event("🚩"), SCALE, image_id=7, **kwargs) is Outcome.FLAGGED
    assert decide(event("2️⃣"), SCALE, image_id=7, **kwargs) is None  # to be logged
    assert event_kind(True, "reaction") is K.ADD and event_kind(False, "reaction") is K.REMOVE
    assert event_kind(True, "backfill") is K.BACKFILL_ADD
    assert event_kind(False, "backfill") is K.BACKFILL_REMOVE


def test_settle_plan_latest_emoji_wins_across_messages_and_falls_back() -> None:
    t1, t2, t3 = (datetime(2026, 1, 1, 12, 0, s, tzinfo=UTC) for s in (1, 2, 3))
    touched = {
        (1, 7): (11, 7),
        (2, 7): (12, 7),
        (3, 7): (13, 7),
        (4, 7): (14, 7),
        (5, 7): (15, 7),
    }
    history = {
        # member 1: 1 on the image's message, then 3 on a repost: rated 3, at the repost's time
        (1, 7): [(K.ADD, (5, "1️⃣"), t1), (K.ADD, (6, "3️⃣"), t2)],
        # member 2: 2 then 3, then takes 3 back: falls back to 2 (unchanged from before)
        (2, 7): [(K.ADD, (5, "2️⃣"), t1), (K.ADD, (5, "3️⃣"), t2), (K.REMOVE, (5, "3️⃣"), t3)],
        # member 3: everything removed: unrated
        (3, 7): [(K.ADD, (5, "1️⃣"), t1), (K.BACKFILL_REMOVE, (5, "1️⃣"), t2)],
        # member 4: no history and no rating: nothing to do
        # member 5: found by backfill: rated, with no time of the member's own
        (5, 7): [(K.BACKFILL_ADD, (5, "2️⃣"), t3)],
    }
    current = {(12, 7): 2.0, (13, 7): 1.0}
    plan = settle_plan(touched, history, current, SCALE)
    assert plan.inserts == [(11, 7, 3.0, t2), (15, 7, 2.0, None)]
    assert plan.updates == []
    assert plan.deletes == [(13, 7)]
    assert plan.outcomes == {
        (1, 7): Outcome.RATED,
        (3, 7): Outcome.UNRATED,
        (5, 7): Outcome.RATED,
    }


def test_an_event_received_before_erase_or_opt_in_never_counts() -> None:
    consent = datetime(2026, 1, 1, 12, tzinfo=UTC)
    kwargs = {"image_id": 7, "banned": False, "opted_out": False, "counted_since": consent}
    before = replace(event("2️⃣"), received_at=consent - timedelta(seconds=1))
    after = replace(before, received_at=consent + timedelta(seconds=1))
    assert decide(before, SCALE, **kwargs) is Outcome.BEFORE_CONSENT
    assert decide(after, SCALE, **kwargs) is None


def test_reconcile_plans_removals_then_additions() -> None:
    wanted, names = wanted_reactions(
        {"2️⃣": [(1, "ada"), (BOT, "bot")], "3️⃣": [(1, "ada"), (2, "bob")], "👍": [(3, "cy")]},
        SCALE,
        BOT,
    )
    assert wanted == {1: {"2️⃣", "3️⃣"}, 2: {"3️⃣"}} and names == {1: "ada", 2: "bob"}
    assert reconcile_plan({"1️⃣", "2️⃣"}, wanted[1]) == [
        (K.BACKFILL_REMOVE, "1️⃣"),
        (K.BACKFILL_ADD, "3️⃣"),
    ]
    assert reconcile_plan({"3️⃣"}, {"3️⃣"}) == []
