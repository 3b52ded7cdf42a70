"""Moderators and members through the local Discord-compatible server: /admin, bans, /stats."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from dreamrate.community.audit import audit_log
from dreamrate.db.models import Job
from dreamrate.exports.rating_export import current_ratings
from dreamrate.fake_discord import BASIC, CHANNEL_ID, GUILD_ID, MANAGE_GUILD, FakeDiscord, Member
from tests.bot.conftest import settled
from tests.bot.test_ratings_e2e import dream
from tests.databases import sqlite_only

MOD = Member(31, "mod", permissions=BASIC | MANAGE_GUILD)
EVE, FAY = Member(32, "eve"), Member(33, "fay")


async def reply(server: FakeDiscord, interaction_id: str) -> dict:  # type: ignore[type-arg]
    callbacks = await server.wait_for(lambda: server.callbacks.get(interaction_id))
    return callbacks[0]


@sqlite_only
async def test_non_moderators_cannot_use_any_admin_command(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    calls = [
        ("allow", [{"name": "channel", "type": 7, "value": str(CHANNEL_ID)}]),
        ("feed", [{"name": "channel", "type": 7, "value": str(CHANNEL_ID)}]),
        ("ban", [{"name": "member", "type": 6, "value": str(FAY.id)}]),
        ("unban", [{"name": "member", "type": 6, "value": str(FAY.id)}]),
        ("remove", [{"name": "message_id", "type": 3, "value": "123"}]),
        ("flags", []),
        ("models", []),
    ]
    for sub, options in calls:
        interaction_id, _ = await server.slash(EVE, "admin", options, subcommand=sub)
        answer = await reply(server, interaction_id)
        assert answer["data"]["flags"] & 64
        assert answer["data"]["content"] == "Only moderators (Manage Server) can use /admin.", sub


@sqlite_only
async def test_a_banned_member_can_neither_generate_nor_rate(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    (message,) = await dream(server, EVE, "a windmill")
    interaction_id, _ = await server.slash(
        MOD, "admin", [{"name": "member", "type": 6, "value": str(FAY.id)}], subcommand="ban"
    )
    assert "is banned" in (await reply(server, interaction_id))["data"]["content"]
    # The ban is in the guild's audit log (written right after the reply), which the web
    # home's moderation page shows.
    for _ in range(200):
        entries = await audit_log(running.engine, GUILD_ID)
        if entries:
            break
        await asyncio.sleep(0.05)
    (entry,) = entries
    assert (entry.action, entry.target, entry.source) == ("ban", f"member {FAY.id}", "discord")
    assert (entry.actor_discord_id, entry.actor_name) == (MOD.id, "mod")
    interaction_id, _ = await server.slash(
        FAY, "dream", [{"name": "prompt", "type": 3, "value": "let me in"}]
    )
    answer = await reply(server, interaction_id)
    assert (
        answer["data"]["content"] == "You are banned from generating and rating images here."
        and answer["data"]["flags"] & 64
    )
    await server.react(FAY, message, "9️⃣")
    await server.react(EVE, message, "4️⃣")
    await settled(running)
    assert [(r["rater_id"], r["rating"]) for r in await current_ratings(running.engine)] == [
        ("32", 4.0)
    ]
    async with running.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Job)) == 1


@sqlite_only
async def test_moderator_removes_an_image_and_reviews_flags(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    first, second = await dream(server, EVE, "two boats", images=2)
    await server.react(FAY, first, "🚩")
    await server.react(EVE, first, "🚩")
    await server.react(FAY, second, "8️⃣")
    await settled(running)
    interaction_id, _ = await server.slash(MOD, "admin", subcommand="flags")
    content = (await reply(server, interaction_id))["data"]["content"]
    assert "2 report(s)" in content and str(first) in content
    interaction_id, _ = await server.slash(
        MOD, "admin", [{"name": "message_id", "type": 3, "value": str(first)}], subcommand="remove"
    )
    assert "removed" in (await reply(server, interaction_id))["data"]["content"]
    assert first not in server.messages  # the message was deleted on Discord
    interaction_id, _ = await server.slash(MOD, "admin", subcommand="flags")
    assert (await reply(server, interaction_id))["data"]["content"] == "No open reports."
    assert {r["message_id"] for r in await current_ratings(running.engine)} == {str(second)}


@sqlite_only
async def test_allowed_channels_and_stats(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    (message,) = await dream(server, EVE, "a meadow")
    await server.react(EVE, message, "7️⃣")
    await server.react(FAY, message, "5️⃣")
    await settled(running)
    interaction_id, _ = await server.slash(EVE, "stats")
    text = (await reply(server, interaction_id))["data"]["content"]
    assert (
        "You have rated 1 image(s): 7×1." in text
        and "2 rating(s) of 1 image(s) by 2 member(s)" in text
    )
    other_channel = CHANNEL_ID + 1
    interaction_id, _ = await server.slash(
        MOD,
        "admin",
        [{"name": "channel", "type": 7, "value": str(other_channel)}],
        subcommand="allow",
    )
    assert "is allowed" in (await reply(server, interaction_id))["data"]["content"]
    interaction_id, _ = await server.slash(
        EVE, "dream", [{"name": "prompt", "type": 3, "value": "elsewhere"}]
    )
    answer = await reply(server, interaction_id)
    assert (
        answer["data"]["content"]
        == f"/dream is not allowed in this channel; use <#{other_channel}>."
    )


@sqlite_only
async def test_rate_and_feed_repost_images_and_their_reactions_count(running) -> None:  # type: ignore[no-untyped-def]
    server, bot = running.discord, running.bot
    first, second = await dream(server, EVE, "twin peaks", images=2)
    await server.react(FAY, first, "8️⃣")
    await settled(running)
    before = set(server.messages)
    interaction_id, token = await server.slash(
        FAY, "rate", [{"name": "count", "type": 4, "value": 1}]
    )
    await server.wait_for(
        lambda: any(
            "Posted 1 image(s)" in server.messages[m]["content"]
            for m in server.followups.get(token, [])
        )
    )
    (repost,) = [m for m in set(server.messages) - before if server.messages[m]["attachments"]]
    assert server.messages[repost]["embeds"][0]["description"] == "twin peaks"
    await server.wait_for(lambda: len(server.reactions[repost]) == 11)
    await server.react(EVE, repost, "6️⃣")  # rating the repost rates the image shown in `second`
    expected = {(str(first), "33", 8.0), (str(second), "32", 6.0)}
    await settled(running)
    assert {
        (r["message_id"], r["rater_id"], r["rating"]) for r in await current_ratings(running.engine)
    } == expected

    interaction_id, _ = await server.slash(
        MOD,
        "admin",
        [
            {"name": "channel", "type": 7, "value": str(CHANNEL_ID)},
            {"name": "minutes", "type": 4, "value": 30},
        ],
        subcommand="feed",
    )
    assert "every 30 min" in (await reply(server, interaction_id))["data"]["content"]
    assert await bot.posts.feed_once() == 1
    assert await bot.posts.feed_once() == 0  # not again before the interval


@sqlite_only
async def test_a_servers_own_blocked_terms_hold_there_only(running) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.community.guild_settings import update_guild_settings
    from dreamrate.fake_discord import GUILD_B_ID

    server = running.discord
    # Set by the server's moderators on the web home's moderation page.
    await update_guild_settings(running.engine, GUILD_ID, blocked_terms=["castle"])
    prompt = [{"name": "prompt", "type": 3, "value": "a CASTLE at dawn"}]
    interaction_id, _ = await server.slash(EVE, "dream", prompt)
    answer = await reply(server, interaction_id)
    assert (
        answer["data"]["content"]
        == ("prompt: contains the blocked term 'castle'; please rephrase.")
        and answer["data"]["flags"] & 64
    )
    # The global list still holds there too ("gore" in the test settings).
    interaction_id, _ = await server.slash(
        EVE, "dream", [{"name": "prompt", "type": 3, "value": "gore"}]
    )
    assert "blocked term 'gore'" in (await reply(server, interaction_id))["data"]["content"]
    # Another server's members may draw castles.
    interaction_id, _ = await server.slash(EVE, "dream", prompt, guild=GUILD_B_ID)
    answer = await reply(server, interaction_id)
    assert answer["type"] == 5  # deferred: accepted and queued


@sqlite_only
async def test_a_servers_blocked_terms_hold_on_reroll_and_arena_too(
    discord_server, database_url, tmp_path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    """The list its moderators set holds on every way a member can get a prompt rendered: a
    Reroll of a job queued before the term was blocked, and ``/arena prompt:``."""
    from dreamrate.community.guild_settings import update_guild_settings
    from tests.bot.conftest import start_bot, stop_bot

    running = await start_bot(
        discord_server, database_url, tmp_path / "data", tiny_models[0], with_worker=False
    )
    try:
        server = running.discord
        _, token = await server.slash(
            EVE, "dream", [{"name": "prompt", "type": 3, "value": "a castle at dawn"}]
        )
        await server.wait_for(
            lambda: "in the queue" in server.originals.get(token, {}).get("content", "")
        )
        original = server.originals[token]
        reroll = original["components"][0]["components"][0]["custom_id"]
        await update_guild_settings(running.engine, GUILD_ID, blocked_terms=["castle"])
        refused_id, _ = await server.click(EVE, int(original["id"]), reroll)
        refusal = await reply(server, refused_id)
        assert refusal["type"] == 4, "the reroll was accepted"
        refusal = refusal["data"]
        assert refusal["content"] == "prompt: contains the blocked term 'castle'; please rephrase."
        assert refusal["flags"] & 64
        interaction_id, _ = await server.slash(
            EVE, "arena", [{"name": "prompt", "type": 3, "value": "a CASTLE by the sea"}]
        )
        answer = await reply(server, interaction_id)
        assert answer["type"] == 4, "the round was accepted"
        answer = answer["data"]
        assert answer["content"] == "prompt: contains the blocked term 'castle'; please rephrase."
        assert answer["flags"] & 64
        async with running.engine.connect() as conn:  # type: ignore[attr-defined]
            assert await conn.scalar(select(func.count()).select_from(Job)) == 1
    finally:
        await stop_bot(running)


@sqlite_only
async def test_a_moderator_cannot_ban_themselves_on_discord_either(
    discord_server, database_url, tmp_path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.community.moderation import is_banned_in
    from tests.bot.conftest import start_bot, stop_bot

    running = await start_bot(
        discord_server, database_url, tmp_path / "data", tiny_models[0], with_worker=False
    )
    try:
        server = running.discord
        interaction_id, _ = await server.slash(
            MOD, "admin", [{"name": "member", "type": 6, "value": str(MOD.id)}], subcommand="ban"
        )
        answer = (await reply(server, interaction_id))["data"]
        assert answer["content"] == "You cannot ban yourself." and answer["flags"] & 64
        assert not await is_banned_in(running.engine, GUILD_ID, MOD.id)  # type: ignore[arg-type]
        assert await audit_log(running.engine, GUILD_ID) == []  # type: ignore[arg-type]
    finally:
        await stop_bot(running)
