"""The moderation use case, called directly (no Discord, no HTTP): the same guards and the
same audit entries whichever side a moderator acts from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from dreamrate.community.guild_settings import check_settings, split_terms, toggled
from dreamrate.community.members import ADMINISTRATOR, MANAGE_GUILD, Member, is_moderator
from dreamrate.community.moderation import Moderation, is_banned_in
from dreamrate.community.refusals import BadValue, NotAllowed, NotFound
from dreamrate.db.models import Flag, Image, ImagePost
from dreamrate.db.users import ensure_user
from tests.web.conftest import seed_images

GUILD, OTHER_GUILD = 1_000_000_000_000_000_001, 1_000_000_000_001_000_001
MOD, EVE = Member(31, "mod"), Member(32, "eve")


@pytest.fixture
async def world(engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    ids = await seed_images(engine, tmp_path / "images", GUILD, ["one", "two"])
    other = await seed_images(engine, tmp_path / "images", OTHER_GUILD, ["three"])
    active = {"now": False}

    async def predictor_active() -> bool:
        return active["now"]

    moderation = Moderation(engine, max_best_of=4, predictor_active=predictor_active)
    return moderation, ids, other, active


def test_who_moderates() -> None:
    assert is_moderator(permissions=MANAGE_GUILD) and is_moderator(permissions=ADMINISTRATOR)
    assert is_moderator(permissions=0, owner=True)
    assert not is_moderator(permissions=0, roles=["helpers"])
    assert is_moderator(permissions=0, roles=["helpers"], moderator_role="helpers")
    assert not is_moderator(permissions=0, roles=["helpers"], moderator_role=None)


def test_settings_ranges_are_written_once() -> None:
    assert check_settings({"blocked_terms": ["a", " a ", "b", ""]}, max_best_of=1) == {
        "blocked_terms": ["a", "b"]
    }
    refusals = [
        ({"feed_interval_minutes": 0}, "the feed interval is 1 to 10080 minutes."),
        ({"feed_interval_minutes": 10_081}, "the feed interval is 1 to 10080 minutes."),
        ({"feed_compare_percent": 101}, "the comparison share is 0 to 100 percent."),
        ({"allowed_channel_ids": [0]}, "allowed channels are Discord channel ids."),
        ({"blocked_terms": ["x" * 101]}, "at most 500 blocked terms of up to 100 characters"),
        ({"blocked_terms": [str(k) for k in range(501)]}, "at most 500 blocked terms"),
        ({"best_of": 5}, "candidates: must be between 1 and 4, got 5."),
        ({"colour": "red"}, "no such setting: colour."),
    ]
    for changes, message in refusals:
        with pytest.raises(BadValue, match=re.escape(message)):
            check_settings(changes, max_best_of=4)
    assert split_terms("castle, Gore\r\nrobot,,") == ["castle", "Gore", "robot"]
    assert toggled([1, 2], 2) == [1] and toggled([1], 2) == [1, 2]


async def test_nobody_bans_themselves_and_every_ban_is_audited(world, engine) -> None:  # type: ignore[no-untyped-def]
    moderation, *_ = world
    with pytest.raises(BadValue, match=re.escape("You cannot ban yourself.")):
        await moderation.ban(GUILD, MOD, MOD, banned=True, source="discord")
    assert not await is_banned_in(engine, GUILD, MOD.discord_id)
    assert await moderation.log(GUILD) == []
    await moderation.ban(GUILD, MOD, EVE, banned=True, source="web")
    assert await is_banned_in(engine, GUILD, EVE.discord_id)
    assert not await is_banned_in(engine, OTHER_GUILD, EVE.discord_id)
    await moderation.ban(GUILD, MOD, EVE, banned=False, source="discord")
    assert not await is_banned_in(engine, GUILD, EVE.discord_id)
    log = [(e.action, e.target, e.source, e.actor_name) for e in await moderation.log(GUILD)]
    assert log == [
        ("unban", f"member {EVE.discord_id}", "discord", "mod"),
        ("ban", f"member {EVE.discord_id}", "web", "mod"),
    ]


async def test_remove_by_message_or_by_id_deletes_every_message_and_is_audited(
    world, engine
) -> None:  # type: ignore[no-untyped-def]
    moderation, ids, other, _ = world
    async with engine.begin() as conn:  # a repost of the first image
        await conn.execute(
            insert(ImagePost).values(message_id=777, image_id=ids[0], channel_id=5, kind="rate")
        )
    asked: list[list[tuple[int, int]]] = []

    async def delete(messages: list[tuple[int, int]]) -> int:
        asked.append(messages)
        return len(messages) - 1  # one was gone already

    removed, deleted = await moderation.remove(
        GUILD, MOD, source="discord", delete=delete, message_id=777
    )
    assert removed.id == ids[0] and deleted == 1
    assert asked == [[(GUILD + 1, GUILD + 5000), (5, 777)]]
    with pytest.raises(NotFound, match=re.escape("No such image here.")):
        await moderation.remove(GUILD, MOD, source="web", delete=delete, image_id=other[0])
    with pytest.raises(
        NotFound, match=re.escape("Message 12 is not a generated image of this server.")
    ):
        await moderation.remove(GUILD, MOD, source="discord", delete=delete, message_id=12)
    async with engine.connect() as conn:
        assert await conn.scalar(select(Image.removed).where(Image.id == other[0])) is False
    (entry,) = await moderation.log(GUILD)
    assert (entry.action, entry.target) == ("remove", f"image {ids[0]}")
    assert entry.detail == {"messages": 2, "messages_deleted": 1}


async def test_dismiss_closes_open_reports_only(world, engine) -> None:  # type: ignore[no-untyped-def]
    moderation, ids, _, _ = world
    with pytest.raises(NotFound, match=re.escape("No open report on that image here.")):
        await moderation.dismiss(GUILD, MOD, source="web", image_id=ids[1])
    reporter = await ensure_user(engine, EVE.discord_id, EVE.name)
    async with engine.begin() as conn:
        await conn.execute(insert(Flag).values(image_id=ids[1], user_id=reporter.id))
    found, closed = await moderation.dismiss(GUILD, MOD, source="discord", message_id=GUILD + 5001)
    assert (found, closed) == (ids[1], 1)
    with pytest.raises(NotFound, match=re.escape("No open report on that image here.")):
        await moderation.dismiss(GUILD, MOD, source="discord", message_id=GUILD + 5001)
    (entry,) = await moderation.log(GUILD)
    assert (entry.action, entry.target, entry.detail) == (
        "dismiss",
        f"image {ids[1]}",
        {"reports": 1},
    )


async def test_settings_change_within_their_ranges_and_are_audited(world) -> None:  # type: ignore[no-untyped-def]
    moderation, _, _, active = world
    with pytest.raises(BadValue, match="the feed interval"):
        await moderation.change_settings(GUILD, MOD, source="web", feed_interval_minutes=0)
    with pytest.raises(NotAllowed, match="no predictor is active"):
        await moderation.change_settings(GUILD, MOD, source="discord", best_of=2)
    assert await moderation.settings(GUILD) is None  # nothing refused was written
    active["now"] = True
    current = await moderation.change_settings(GUILD, MOD, source="discord", best_of=2)
    assert current.best_of == 2
    assert await moderation.toggle_channel(GUILD, MOD, 55, source="discord") == [55]
    assert await moderation.toggle_channel(GUILD, MOD, 55, source="discord") == []
    log = [(e.action, e.detail) for e in await moderation.log(GUILD)]
    assert log == [
        ("settings", {"allowed_channel_ids": []}),
        ("settings", {"allowed_channel_ids": [55]}),
        ("settings", {"best_of": 2}),
    ]
