"""Choices on comparison posts through RatingService, on SQLite and PostgreSQL: one batch
mixing ratings and choices, backfill both ways, a removed image, a member's export and erase."""

from __future__ import annotations

from sqlalchemy import select, update

from dreamrate.community.posts import record_comparison
from dreamrate.community.privacy import erase, export_mine
from dreamrate.db.models import Choice, ChoiceEvent, Image
from dreamrate.exports.choice_export import current_choices
from dreamrate.ratings.decisions import Outcome, ReactionEvent
from dreamrate.ratings.service import RatingService
from tests.ratings.test_service import MESSAGES, service  # noqa: F401  (the fixture)

PAIR_POST = 7001


def react(user: int, emoji: str, message: int = PAIR_POST, added: bool = True) -> ReactionEvent:
    return ReactionEvent(added=added, discord_user_id=user, message_id=message, emoji=emoji)


async def images(service: RatingService) -> list[int]:  # noqa: F811
    async with service.engine.connect() as conn:
        return list((await conn.execute(select(Image.id).order_by(Image.id))).scalars())


async def winners(service: RatingService) -> dict[int, str]:  # noqa: F811
    return {int(r["rater_id"]): r["winner"] for r in await current_choices(service.engine)}


async def test_one_batch_of_ratings_and_choices_each_where_it_belongs(service) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b, _ = await images(service)
    await record_comparison(
        service.engine, message_id=PAIR_POST, pair=(a, b), channel_id=1, kind="compare"
    )
    outcomes = await service.record_many(
        [
            react(1, "⬅️"),
            react(1, "5️⃣", MESSAGES[0]),
            react(2, "➡️"),
            react(2, "🟰"),
            react(3, "7️⃣"),  # a rating emoji on a pair
            react(3, "⬅️", MESSAGES[1]),  # a choice emoji under one image
            react(4, "⬅️", PAIR_POST),
            react(4, "⬅", PAIR_POST, added=False),  # the same emoji, without U+FE0F
        ]
    )
    assert outcomes == [
        Outcome.CHOSEN,
        Outcome.RATED,
        Outcome.CHOSEN,
        Outcome.CHOSEN,
        Outcome.NOT_A_RATING,
        Outcome.NOT_A_RATING,
        # One batch settles each member once: added and taken back, nothing changed.
        Outcome.UNCHANGED,
        Outcome.UNCHANGED,
    ]
    assert await winners(service) == {1: "a", 2: "tie"}
    async with service.engine.connect() as conn:
        assert len((await conn.execute(select(ChoiceEvent.id))).all()) == 5  # the ignored: none

    # Backfill: Discord shows member 2's tie gone and member 5 choosing right.
    added, removed = await service.reconcile(
        PAIR_POST, {"⬅": [(1, "one")], "➡️": [(2, "two"), (5, "five")], "7️⃣": [(6, "six")]}
    )
    assert (added, removed) == (1, 1)  # member 5 added, member 2's tie removed
    assert await winners(service) == {1: "a", 2: "b", 5: "b"}
    assert await service.reconcile(PAIR_POST, {"⬅️": [(1, "")], "➡️": [(2, ""), (5, "")]}) == (
        0,
        0,
    )

    mine = await export_mine(service.engine, 1)
    assert [(c["left_image_id"], c["right_image_id"], c["winner"]) for c in mine["choices"]] == [
        (a, b, "a")
    ]
    erased = await erase(service.engine, 1)
    assert (erased.choices, erased.ratings, erased.events) == (1, 1, 2)
    assert (await export_mine(service.engine, 1))["choices"] == []
    # Member 1's ⬅️ is still on Discord: backfill never takes it up again.
    await service.reconcile(PAIR_POST, {"⬅️": [(1, "")], "➡️": [(2, ""), (5, "")]})
    assert await winners(service) == {2: "b", 5: "b"}

    # A removed image ends its comparison: its choices stay out, new ones are not recorded.
    async with service.engine.begin() as conn:
        await conn.execute(update(Image).where(Image.id == b).values(removed=True))
    assert await winners(service) == {}
    assert await service.record_many([react(7, "⬅️")]) == [Outcome.NOT_A_RATING]  # ignored
    async with service.engine.connect() as conn:
        assert len((await conn.execute(select(Choice.id))).all()) == 2
