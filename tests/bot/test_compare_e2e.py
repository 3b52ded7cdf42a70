"""Choices between two images through real reactions, on SQLite and PostgreSQL: /compare posts
a pair, members choose, change and take back their choice, the bot is away while some
choose, members opt out and erase; emoji that belong on the other kind of post are ignored."""

from __future__ import annotations

from sqlalchemy import select, update

from dreamrate.db.models import Choice, ComparisonPost, Image, ImagePost
from dreamrate.db.types import utcnow
from dreamrate.exports.choice_export import current_choices
from dreamrate.fake_discord import BASIC, CHANNEL_ID, GUILD_ID, MANAGE_GUILD, FakeDiscord, Member
from tests.bot.conftest import Running, settled
from tests.bot.test_discord_world_e2e import say
from tests.bot.test_ratings_e2e import dream, exported
from tests.databases import sqlite_only
from tests.reliability.test_promises_e2e import restart

ADA, BOB, CY, DEE = Member(81, "ada"), Member(82, "bob"), Member(83, "cy"), Member(84, "dee")
LEFT, RIGHT, TIE = "⬅️", "➡️", "🟰"


async def compare(
    server: FakeDiscord, member: Member, count: int = 1, **where: object
) -> list[int]:
    """Run /compare (``channel=`` as for ``slash``) and return the comparison messages it
    posted, once their emoji are seeded."""
    before = set(server.messages)
    answer = await say(
        server, member, "compare", [{"name": "count", "type": 4, "value": count}], **where
    )
    assert answer.startswith(f"Posted {count} pair(s)"), answer

    def posted() -> list[int]:
        found = [
            m
            for m in server.messages
            if m not in before
            and any(
                "dreamrate-compare-" in a["filename"] for a in server.messages[m]["attachments"]
            )
        ]
        return (
            found
            if len(found) == count and all(len(server.reactions[m]) == 3 for m in found)
            else []
        )

    return sorted(await server.wait_for(posted))


async def pairs(running: Running) -> dict[int, tuple[int, int]]:
    async with running.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(
            select(ComparisonPost.message_id, ComparisonPost.image_a_id, ComparisonPost.image_b_id)
        )
        return {int(m): (int(a), int(b)) for m, a, b in rows}


async def choices(running: Running) -> set[tuple[int, str, str]]:
    """(message, member, winner) of every choice that counts, as the export writes it."""
    return {
        (int(row["message_id"]), row["rater_id"], row["winner"])
        for row in await current_choices(running.engine)  # type: ignore[arg-type]
    }


@sqlite_only
async def test_choose_change_remove_and_wrong_emoji(running: Running) -> None:
    server = running.discord
    singles = await dream(server, ADA, "a red fox in snow", images=2)
    (pair,) = await compare(server, BOB)
    a, b = (await pairs(running))[pair]
    # The pair is the two images of the one prompt, shown side by side in one attachment.
    assert {a, b} == set(await _image_ids(running, singles))
    assert server.messages[pair]["attachments"][0]["filename"].startswith(
        f"dreamrate-compare-{a}-{b}-"
    )
    await server.react(ADA, pair, LEFT)
    await server.react(BOB, pair, RIGHT)
    await server.react(BOB, pair, TIE)  # the latest counts: can't choose
    await server.react(CY, pair, LEFT)
    await server.react(CY, pair, RIGHT)
    await server.unreact(CY, pair, RIGHT)  # falls back to the left one still there
    await server.react(DEE, pair, RIGHT)
    await server.unreact(DEE, pair, RIGHT)  # no choice left
    await server.react(DEE, pair, "7️⃣")  # a rating emoji on a comparison: ignored
    await server.react(DEE, singles[0], LEFT)  # a choice emoji under one image: ignored
    await server.react(ADA, singles[0], "8️⃣")
    await settled(running)
    assert await choices(running) == {
        (pair, str(ADA.id), "a"),
        (pair, str(BOB.id), "tie"),
        (pair, str(CY.id), "a"),
    }
    assert await exported(running.engine) == {(str(singles[0]), str(ADA.id), 8.0)}


async def _image_ids(running: Running, messages: list[int]) -> list[int]:
    async with running.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = await conn.execute(
            select(Image.id).where(Image.discord_message_id.in_(messages)).order_by(Image.id)
        )
        return list(rows.scalars())


async def test_choices_made_while_down_opt_out_and_erase_across_restarts(
    running: Running, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    await dream(server, DEE, "a lighthouse at dusk", images=2)  # Dee never erases
    (pair,) = await compare(server, ADA)
    await server.react(ADA, pair, LEFT)
    await server.react(BOB, pair, RIGHT)
    await settled(running)
    assert await choices(running) == {(pair, str(ADA.id), "a"), (pair, str(BOB.id), "b")}
    # Bob opts out; Cy and Ada choose, Bob changes his mind, all while the bot is away.
    assert "no longer be recorded" in await say(server, BOB, "privacy", subcommand="optout")
    url = running.engine.url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
    from tests.bot.conftest import start_bot, stop_bot

    await stop_bot(running)
    await server.wait_disconnected()
    await server.react(CY, pair, TIE)
    await server.unreact(ADA, pair, LEFT)
    await server.react(ADA, pair, RIGHT)
    await server.unreact(BOB, pair, RIGHT)
    await server.react(BOB, pair, LEFT)
    bot = await start_bot(server, url, running.data_dir, tiny_models[0])
    try:
        await settled(bot, backfills=1)
        # Backfill found Cy's and Ada's choices; Bob's stays out while he is opted out.
        assert await choices(bot) == {(pair, str(ADA.id), "b"), (pair, str(CY.id), "tie")}
        erased = await say(server, ADA, "privacy", subcommand="erase")
        assert erased.startswith("Erased 0 rating(s), 1 choice(s) between images"), erased
        await settled(bot)
        # Her reaction stays on Discord: after a restart and a backfill it never comes back.
        bot = await restart(bot, tiny_models[0])
        await settled(bot, backfills=1)
        assert await choices(bot) == {(pair, str(CY.id), "tie")}
        async with bot.engine.connect() as conn:  # type: ignore[attr-defined]
            stored = (await conn.execute(select(Choice.winner))).scalars().all()
        assert sorted(stored) == ["b", "tie"]  # Bob's old choice is kept, not exported
        # What Ada chooses from now on counts like anyone's.
        await server.unreact(ADA, pair, RIGHT)
        await server.react(ADA, pair, LEFT)
        await settled(bot)
        assert (pair, str(ADA.id), "a") in await choices(bot)
    finally:
        running.__dict__.update(bot.__dict__)  # the fixture stops whichever bot runs last


@sqlite_only
async def test_compare_never_repeats_a_pair_the_member_judged(running: Running) -> None:
    server = running.discord
    await dream(server, ADA, "three pears on a table", images=3)
    seen = set()
    for _ in range(3):  # three images: three distinct pairs
        (pair,) = await compare(server, BOB)
        a, b = (await pairs(running))[pair]
        assert frozenset((a, b)) not in seen
        seen.add(frozenset((a, b)))
        await server.react(BOB, pair, LEFT)
        await settled(running)
    answer = await say(server, BOB, "compare")
    assert answer.startswith("No pairs to compare yet"), answer
    # Another member judges them on the posts already here; in another channel they are
    # posted for them again.
    assert (await say(server, CY, "compare")).startswith("No pairs to compare yet")
    (pair,) = await compare(server, CY, channel=GUILD_ID + 101)  # #gallery
    assert frozenset((await pairs(running))[pair]) in seen


@sqlite_only
async def test_the_feed_alternates_ratings_and_comparisons(running: Running) -> None:
    server, bot = running.discord, running.bot
    await dream(server, ADA, "four plums", images=4)
    mod = Member(89, "mod", permissions=BASIC | MANAGE_GUILD)
    answer = await say(
        server,
        mod,
        "admin",
        [
            {"name": "channel", "type": 7, "value": str(CHANNEL_ID)},
            {"name": "minutes", "type": 4, "value": 30},
            {"name": "compare", "type": 4, "value": 50},
        ],
        subcommand="feed",
    )
    assert answer.endswith("every 30 min, 50% of posts comparisons."), answer
    kinds = []
    for _ in range(4):
        before = set(server.messages)
        assert await bot.posts.feed_once() == 1  # type: ignore[attr-defined]
        assert await bot.posts.feed_once() == 0  # type: ignore[attr-defined]  # the interval
        (new,) = set(server.messages) - before
        name = server.messages[new]["attachments"][0]["filename"]
        kinds.append("pair" if name.startswith("dreamrate-compare-") else "single")
        async with running.engine.begin() as conn:  # type: ignore[attr-defined]
            # As if the interval had passed.
            long_ago = utcnow().replace(year=2000)
            await conn.execute(update(ImagePost).values(posted_at=long_ago))
            await conn.execute(update(ComparisonPost).values(posted_at=long_ago))
    assert kinds == ["pair", "single", "pair", "single"]
    # Choices on the feed's pairs count like any.
    feed_pairs = sorted(await pairs(running))
    await server.wait_for(lambda: all(len(server.reactions[m]) == 3 for m in feed_pairs))
    await server.react(BOB, feed_pairs[0], RIGHT)
    await settled(running)
    assert await choices(running) == {(feed_pairs[0], str(BOB.id), "b")}
