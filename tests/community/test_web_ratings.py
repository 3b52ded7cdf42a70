"""Ratings and choices from the web home land in the same log as reactions and obey the
same rules: one rating per member and image (whichever side they used last), bans,
opt-out, erase; a choice only on a pair shown to that member."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from dreamrate.community.moderation import remove_image, set_banned
from dreamrate.community.posts import PostRepository
from dreamrate.community.privacy import erase, set_opted_out
from dreamrate.community.web_ratings import (
    NotShownError,
    choose_on_web,
    rate_on_web,
    show_pair_on_web,
    web_message_of,
)
from dreamrate.db.models import ChoiceEvent, Image, Rating, RatingEvent
from dreamrate.db.types import utcnow
from dreamrate.exports.rating_export import current_ratings
from dreamrate.ratings.decisions import Outcome, ReactionEvent
from dreamrate.ratings.scale import RatingScale
from dreamrate.ratings.service import RatingService
from tests.web.conftest import seed_images

SCALE = RatingScale(
    "sac-10", tuple(["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣", "🔟"]), tuple(range(1, 11))
)
GUILD = 1_000_000_000_000_000_001
MEMBER, OTHER = 4001, 4002


@pytest.fixture
async def world(engine, tmp_path):  # type: ignore[no-untyped-def]
    ids = await seed_images(engine, tmp_path / "images", GUILD, ["one", "two", "three"])
    return RatingService(engine, SCALE), ids


async def _current(engine, image_id: int) -> list[tuple[float, str]]:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Rating.value, Rating.source).where(Rating.image_id == image_id)
        )
        return [(float(v), s) for v, s in rows]


async def _web(service: RatingService, image_id: int, value: float, who: int = MEMBER) -> Outcome:
    return await rate_on_web(
        service, discord_id=who, name=f"m{who}", guild_id=GUILD, image_id=image_id, value=value
    )


async def test_a_member_has_one_rating_whichever_side_they_used_last(world, engine) -> None:  # type: ignore[no-untyped-def]
    service, ids = world
    image = ids[0]
    message = GUILD + 5000  # the image's own Discord message (seed_images)
    assert await _web(service, image, 3) is Outcome.RATED
    assert await _current(engine, image) == [(3.0, "web")]
    # Then a reaction on Discord: it is the latest, so it is the rating.
    await service.record(
        ReactionEvent(added=True, discord_user_id=MEMBER, message_id=message, emoji="8️⃣")
    )
    assert await _current(engine, image) == [(8.0, "reaction")]
    # Back on the web, the same value as before: the web is the latest side again.
    assert await _web(service, image, 3) is Outcome.RATED
    assert await _current(engine, image) == [(3.0, "web")]
    assert await _web(service, image, 5) is Outcome.RATED
    assert await _current(engine, image) == [(5.0, "web")]
    # Taking the Discord reaction away leaves the web rating alone.
    await service.record(
        ReactionEvent(added=False, discord_user_id=MEMBER, message_id=message, emoji="8️⃣")
    )
    assert await _current(engine, image) == [(5.0, "web")]
    rows = await current_ratings(engine)
    assert [(r["rater_id"], r["rating"]) for r in rows] == [(str(MEMBER), 5.0)]
    async with engine.connect() as conn:
        web_events = await conn.scalar(
            select(func.count()).where(RatingEvent.message_id == web_message_of(image))
        )
    # Each re-rating took the earlier web emoji away first: 3 adds, 2 removes.
    assert web_events == 5


async def test_off_scale_banned_and_opted_out_record_nothing(world, engine) -> None:  # type: ignore[no-untyped-def]
    service, ids = world
    with pytest.raises(ValueError, match="a rating is one of"):
        await _web(service, ids[0], 11)
    await set_banned(engine, GUILD, OTHER, True)
    assert await _web(service, ids[0], 4, who=OTHER) is Outcome.BANNED
    await set_opted_out(engine, MEMBER, True)
    assert await _web(service, ids[0], 4) is Outcome.OPTED_OUT
    assert await _current(engine, ids[0]) == []
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(RatingEvent)) == 0


async def test_erase_takes_web_ratings_and_choices_and_later_ones_count(world, engine) -> None:  # type: ignore[no-untyped-def]
    service, ids = world
    await _web(service, ids[0], 9)
    pair = await show_pair_on_web(
        engine, guild_id=GUILD, discord_id=MEMBER, left=ids[0], right=ids[1]
    )
    chosen = await choose_on_web(
        service, discord_id=MEMBER, name="m", guild_id=GUILD, message_id=pair.message_id, winner="a"
    )
    assert chosen is Outcome.CHOSEN
    erased = await erase(engine, MEMBER)
    assert (erased.ratings, erased.choices) == (1, 1)
    assert await _current(engine, ids[0]) == []
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(ChoiceEvent)) == 0
    # What they rate on the web after erasing counts like anyone's.
    assert await _web(service, ids[1], 2) is Outcome.RATED
    assert await _current(engine, ids[1]) == [(2.0, "web")]


async def test_a_choice_needs_a_pair_shown_to_that_member(world, engine) -> None:  # type: ignore[no-untyped-def]
    service, ids = world
    pair = await show_pair_on_web(
        engine, guild_id=GUILD, discord_id=MEMBER, left=ids[0], right=ids[1]
    )
    assert pair.message_id < 0
    choose = {"name": "x", "guild_id": GUILD, "message_id": pair.message_id, "winner": "b"}
    with pytest.raises(NotShownError):
        await choose_on_web(service, discord_id=OTHER, **choose)
    with pytest.raises(NotShownError):  # an id never shown to anyone
        await choose_on_web(service, discord_id=MEMBER, **{**choose, "message_id": -5})
    with pytest.raises(NotShownError):  # shown in this guild only
        await choose_on_web(service, discord_id=MEMBER, **{**choose, "guild_id": GUILD + 10})
    with pytest.raises(ValueError):
        await choose_on_web(service, discord_id=MEMBER, **{**choose, "winner": "left"})
    assert await choose_on_web(service, discord_id=MEMBER, **choose) is Outcome.CHOSEN
    # The image went away since: the pair no longer takes choices.
    await remove_image(engine, GUILD, image_id=ids[1])
    with pytest.raises(NotShownError):
        await choose_on_web(service, discord_id=MEMBER, **{**choose, "winner": "a"})


async def test_web_posts_stay_off_discord(world, engine) -> None:  # type: ignore[no-untyped-def]
    service, ids = world
    await _web(service, ids[0], 7)
    await show_pair_on_web(engine, guild_id=GUILD, discord_id=MEMBER, left=ids[0], right=ids[2])
    # Backfill re-reads Discord messages only: the web's posts are not among them.
    messages = await PostRepository(engine).recent_image_messages(utcnow() - timedelta(days=1))
    assert all(m > 0 for m, _ in messages)
    assert {m for m, _ in messages} == {GUILD + 5000, GUILD + 5001, GUILD + 5002}
    # Removing the image deletes its Discord message only.
    removed = await remove_image(engine, GUILD, image_id=ids[0])
    assert removed is not None and removed.messages == [(GUILD + 1, GUILD + 5000)]
    async with engine.connect() as conn:
        assert await conn.scalar(select(Image.removed).where(Image.id == ids[0])) is True
    assert await remove_image(engine, GUILD + 10, image_id=ids[1]) is None  # not that guild's


async def test_an_image_hidden_since_the_page_showed_it_takes_no_click(world, engine) -> None:  # type: ignore[no-untyped-def]
    """The web's rule, kept where the click is recorded: a member's report waiting for a
    moderator hides an image from the others; a choice or a rating sent from a page shown
    before that counts nowhere, however late the web's own look came."""
    from dreamrate.community.refusals import NotFound
    from dreamrate.db.models import Choice, Flag
    from dreamrate.db.users import ensure_user

    service, ids = world
    pair = await show_pair_on_web(
        engine, guild_id=GUILD, discord_id=MEMBER, left=ids[0], right=ids[1]
    )
    assert await _web(service, ids[1], 2) is Outcome.RATED
    reporter = await ensure_user(engine, OTHER, "reporter")
    async with engine.begin() as conn:
        await conn.execute(Flag.__table__.insert().values(image_id=ids[1], user_id=reporter.id))
    choose = {"name": "x", "guild_id": GUILD, "message_id": pair.message_id, "winner": "a"}
    assert await choose_on_web(service, discord_id=MEMBER, **choose) is Outcome.NOT_AN_IMAGE
    # A rating whose page was shown before the report, recorded after it.
    late = ReactionEvent(
        added=True,
        discord_user_id=MEMBER,
        message_id=web_message_of(ids[1]),
        emoji="5️⃣",
        guild_id=GUILD,
        user_name="x",
    )
    assert await service.record(late, source="web") is Outcome.NOT_AN_IMAGE
    with pytest.raises(NotFound):  # asked afresh, it is not there to rate
        await _web(service, ids[1], 4)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Choice)) == 0
        assert await conn.scalar(select(func.count()).select_from(ChoiceEvent)) == 0
    assert await _current(engine, ids[1]) == [(2.0, "web")]
    assert await _web(service, ids[0], 4) is Outcome.RATED  # the other one still takes it
