"""Ratings through real reactions: exact export, backfill after downtime, privacy, bad input."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from dreamrate.db.models import Job, Rating, User
from dreamrate.exports.rating_export import current_ratings
from dreamrate.fake_discord import FakeDiscord, Member
from tests.bot.conftest import settled, start_bot, stop_bot
from tests.databases import sqlite_only

ADA, BOB, CY = Member(21, "ada"), Member(22, "bob"), Member(23, "cy")


async def dream(
    server: FakeDiscord, member: Member, prompt: str, images: int = 1, **where: object
) -> list[int]:
    """Run /dream (``guild=``, ``channel=`` as for ``slash``) and return the posted image
    messages, once their emoji are seeded."""
    _, token = await server.slash(
        member,
        "dream",
        [
            {"name": "prompt", "type": 3, "value": prompt},
            {"name": "images", "type": 4, "value": images},
        ],
        **where,  # type: ignore[arg-type]
    )

    def posted() -> list[int]:
        ids = [m for m in server.followups.get(token, []) if server.messages[m]["attachments"]]
        return (
            ids if len(ids) == images and all(len(server.reactions[m]) == 11 for m in ids) else []
        )

    return await server.wait_for(posted)


async def exported(engine) -> set[tuple[str, str, float]]:  # type: ignore[no-untyped-def]
    return {
        (row["message_id"], row["rater_id"], row["rating"]) for row in await current_ratings(engine)
    }


def on_server(server: FakeDiscord, messages: list[int]) -> set[tuple[str, str, float]]:
    """The ratings the reactions on the server imply: each member's most recent rating emoji."""
    values = {
        e: float(i + 1) for i, e in enumerate(["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣", "🔟"])
    }
    result = set()
    for message in messages:
        latest: dict[int, str] = {}
        for emoji, users in server.reactions[message].items():
            for user in users:
                if emoji in values and user != 1_000_000_000_000_000_003:
                    latest[user] = emoji  # single rating emoji per member in these tests
        result |= {(str(message), str(user), values[emoji]) for user, emoji in latest.items()}
    return result


@sqlite_only
async def test_add_change_remove_gives_exact_export(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    first, second = await dream(server, ADA, "a red fox", images=2)
    await server.react(ADA, first, "7️⃣")
    await server.react(BOB, first, "3️⃣")
    await server.react(BOB, first, "9️⃣")  # changes to 9
    await server.react(CY, second, "5️⃣")
    await server.react(CY, first, "2️⃣")
    await server.unreact(CY, first, "2️⃣")  # removed again
    await server.react(ADA, second, "🔟")
    await server.react(ADA, second, "👍")  # not a rating
    expected = {
        (str(first), "21", 7.0),
        (str(first), "22", 9.0),
        (str(second), "23", 5.0),
        (str(second), "21", 10.0),
    }
    await settled(running)
    assert await exported(running.engine) == expected


async def test_backfill_after_downtime_matches_the_server(
    discord_server, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot(discord_server, database_url, tmp_path / "data", tiny_models[0])
    messages = await dream(discord_server, ADA, "a lighthouse", images=2)
    await discord_server.react(ADA, messages[0], "4️⃣")
    await discord_server.react(BOB, messages[0], "8️⃣")
    await discord_server.react(CY, messages[1], "6️⃣")
    await settled(bot)
    assert len(await exported(bot.engine)) == 3
    await stop_bot(bot)
    await discord_server.wait_disconnected()
    # While the bot is away: a change, a removal and a new rating.
    await discord_server.unreact(ADA, messages[0], "4️⃣")
    await discord_server.react(ADA, messages[0], "1️⃣")
    await discord_server.unreact(BOB, messages[0], "8️⃣")
    await discord_server.react(Member(24, "dee"), messages[1], "🔟")
    bot = await start_bot(discord_server, database_url, tmp_path / "data", tiny_models[0])
    try:
        expected = on_server(discord_server, messages)
        assert expected == {
            (str(messages[0]), "21", 1.0),
            (str(messages[1]), "23", 6.0),
            (str(messages[1]), "24", 10.0),
        }
        await settled(bot, backfills=1)
        assert await exported(bot.engine) == expected
    finally:
        await stop_bot(bot)


@sqlite_only
async def test_opt_out_and_erase(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    (message,) = await dream(server, ADA, "a quiet harbour")
    await server.react(BOB, message, "6️⃣")
    await server.react(CY, message, "2️⃣")
    await settled(running)  # both recorded before anyone opts out
    assert len(await exported(running.engine)) == 2
    await server.slash(BOB, "privacy", subcommand="optout")
    await server.wait_for(
        lambda: any(
            "no longer be recorded" in (c[0].get("data") or {}).get("content", "")
            for c in server.callbacks.values()
        )
    )
    await server.react(BOB, message, "9️⃣")  # not recorded
    await server.slash(CY, "privacy", subcommand="erase")
    await server.wait_for(
        lambda: any(
            "Erased 1 rating" in (c[0].get("data") or {}).get("content", "")
            for c in server.callbacks.values()
        )
    )
    await settled(running)
    # Bob's 9 was not recorded: his rating stays 6, kept but out of every export while he is
    # opted out; Cy's is gone.
    async with running.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(User.discord_id, Rating.value).join(User, User.id == Rating.user_id)
            )
        ).all()
    assert [(int(d), v) for d, v in stored] == [(BOB.id, 6.0)]
    assert await exported(running.engine) == set()
    await server.slash(BOB, "privacy", subcommand="optin")
    await server.wait_for(
        lambda: any(
            "recorded again" in (c[0].get("data") or {}).get("content", "")
            for c in server.callbacks.values()
        )
    )
    assert await exported(running.engine) == {(str(message), "22", 6.0)}


@sqlite_only
async def test_bad_input_is_refused_ephemerally_and_enqueues_nothing(
    discord_server, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot(
        discord_server,
        database_url,
        tmp_path / "data",
        tiny_models[0],
        with_worker=False,
        per_user_queue_cap=1,
    )
    try:
        server = discord_server
        cases = [
            ([{"name": "prompt", "type": 3, "value": "   "}], "prompt: must not be empty."),
            (
                [{"name": "prompt", "type": 3, "value": "x" * 1001}],
                "prompt: must be at most 1000 characters, got 1001.",
            ),
            (
                [{"name": "prompt", "type": 3, "value": "much GORE"}],
                "prompt: contains the blocked term 'gore'; please rephrase.",
            ),
            (
                [
                    {"name": "prompt", "type": 3, "value": "ok"},
                    {"name": "size", "type": 3, "value": "4096"},
                ],
                "width: must be a multiple of 8 between 32 and 1024, got 4096.",
            ),
        ]
        for options, message in cases:
            interaction_id, _ = await server.slash(ADA, "dream", options)
            reply = await server.wait_for(lambda i=interaction_id: server.callbacks.get(i))
            assert reply[0]["type"] == 4 and reply[0]["data"]["flags"] & 64  # ephemeral
            assert reply[0]["data"]["content"] == message
        async with bot.engine.connect() as conn:  # type: ignore[attr-defined]
            assert await conn.scalar(select(func.count()).select_from(Job)) == 0
        ok_id, _ = await server.slash(
            ADA, "dream", [{"name": "prompt", "type": 3, "value": "fine"}]
        )
        await server.wait_for(lambda: server.callbacks.get(ok_id))
        capped_id, capped_token = await server.slash(
            ADA, "dream", [{"name": "prompt", "type": 3, "value": "one more"}]
        )
        await server.wait_for(
            lambda: (
                capped_token in server.followups
                or any(
                    "limit is 1" in (c.get("data") or {}).get("content", "")
                    for c in server.callbacks.get(capped_id, [])
                )
            )
        )
        async with bot.engine.connect() as conn:  # type: ignore[attr-defined]
            assert await conn.scalar(select(func.count()).select_from(Job)) == 1
    finally:
        await stop_bot(bot)


async def test_gateway_drop_resumes_and_backfill_repairs_the_gap(running) -> None:  # type: ignore[no-untyped-def]

    server = running.discord
    (message,) = await dream(server, ADA, "stormy sea")
    await server.react(BOB, message, "3️⃣")
    await server.drop_connection()
    # Reactions while the socket is down never reach the bot as events.
    await server.react(CY, message, "9️⃣")
    await server.unreact(BOB, message, "3️⃣")
    await server.wait_for(lambda: server.resumes + server.identifies >= 2)
    await settled(running, backfills=2)  # on connect, and again on resume
    assert await exported(running.engine) == {(str(message), "23", 9.0)}
    assert server.resumes >= 1  # it resumed the session rather than starting over
