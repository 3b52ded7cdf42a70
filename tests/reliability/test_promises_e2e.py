"""Promises kept under faults, through the real bot and the local Discord-compatible server:
erase and opt-out stay final across restarts, honest raters are not taken for spammers after
downtime, reroll obeys today's rules, a crash between posting and recording posts once, and
restarts during a job spend none of its attempts."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.util import await_only

from dreamrate.db.engine import create_engine
from dreamrate.db.models import Embedding, Image, Job, JobStatus, Rating, User
from dreamrate.fake_discord import BASIC, MANAGE_GUILD, FakeDiscord, Member
from dreamrate.ratings.aggregate import rater_aware_targets
from dreamrate.ratings.training_data import load_database_data
from tests.bot.conftest import Running, settled, start_bot, stop_bot
from tests.bot.test_discord_world_e2e import say
from tests.bot.test_ratings_e2e import dream, exported
from tests.conftest import _pg_execute
from tests.databases import sqlite_only

ADA, BOB, CY, DEE = Member(71, "ada"), Member(72, "bob"), Member(73, "cy"), Member(74, "dee")
MOD = Member(79, "mod", permissions=BASIC | MANAGE_GUILD)


async def restart(running: Running, tiny: Path, **env: object) -> Running:
    """Stop the bot (the server keeps every reaction) and start it again on the same data."""
    url = running.engine.url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
    await stop_bot(running)
    await running.discord.wait_disconnected()
    return await start_bot(running.discord, url, running.data_dir, tiny, **env)


async def ratings_of(running: Running, member: Member) -> list[float]:
    async with running.engine.connect() as conn:  # type: ignore[attr-defined]
        return list(
            (
                await conn.execute(
                    select(Rating.value)
                    .join(User, User.id == Rating.user_id)
                    .where(User.discord_id == member.id)
                )
            ).scalars()
        )


async def test_erase_stays_erased_across_a_restart_with_the_reactions_still_there(
    running: Running, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    first, second = await dream(server, ADA, "a quiet harbour", images=2)
    await server.react(BOB, first, "6️⃣")
    await server.react(BOB, second, "4️⃣")
    await server.react(CY, first, "3️⃣")
    await server.react(BOB, first, "🚩")
    await settled(running)
    answer = await say(server, BOB, "privacy", subcommand="erase")
    assert answer.startswith(
        "Erased 2 rating(s), 0 choice(s) between images, 2 reaction event(s) and 1 report(s)"
    )
    assert await ratings_of(running, BOB) == []
    # After a restart, with Bob's reactions still on Discord, Dee rates.
    bot = await restart(running, tiny_models[0])
    await server.react(DEE, second, "9️⃣")
    try:
        await settled(bot, backfills=1)
        assert await exported(bot.engine) == {
            (str(first), str(CY.id), 3.0),
            (str(second), str(DEE.id), 9.0),
        }
        assert await ratings_of(bot, BOB) == []
        # Only what Bob does from now on counts: a new rating on the same image does.
        await server.react(BOB, second, "8️⃣")
        await settled(bot)
        assert await ratings_of(bot, BOB) == [8.0]
        assert (str(second), str(BOB.id), 8.0) in await exported(bot.engine)
        bot = await restart(bot, tiny_models[0])
        await settled(bot, backfills=1)
        assert await ratings_of(bot, BOB) == [8.0]  # still not his old 4
    finally:
        running.__dict__.update(bot.__dict__)  # the fixture stops whichever bot runs last


# The privacy rule's SQL is tested on both databases in tests/ratings/test_policy.py; this
# end-to-end run checks the bot's wiring through a restart, on one.
@sqlite_only
async def test_opt_out_react_opt_in_restart_counts_only_reactions_after_opt_in(
    running: Running, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    first, second = await dream(server, ADA, "two lanterns", images=2)
    assert "no longer be recorded" in await say(server, BOB, "privacy", subcommand="optout")
    await server.react(BOB, first, "5️⃣")  # seen live while he is out
    await settled(running)
    bot = await restart(running, tiny_models[0])
    try:
        await server.react(BOB, second, "7️⃣")  # while out, and found by a backfill
        await settled(bot, backfills=1)
        bot = await restart(bot, tiny_models[0])
        await settled(bot, backfills=1)
        assert "recorded again" in await say(server, BOB, "privacy", subcommand="optin")
        await server.react(BOB, second, "2️⃣")
        await settled(bot)
        bot = await restart(bot, tiny_models[0])
        await settled(bot, backfills=1)
        assert {(m, v) for m, r, v in await exported(bot.engine) if r == str(BOB.id)} == {
            (str(second), 2.0)
        }
    finally:
        running.__dict__.update(bot.__dict__)


# Flagging is arithmetic over the ratings read back (the same on either database).
@sqlite_only
async def test_honest_raters_are_not_flagged_after_downtime(running: Running, tiny_models) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    messages = []
    for k in range(3):
        messages += await dream(server, ADA, f"a study of light {k}", images=4)
    emoji = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣", "🔟"]
    quality = np.linspace(2, 9, len(messages))
    raters = [Member(800 + k, f"honest{k}") for k in range(4)]
    url = running.engine.url.render_as_string(hide_password=False)  # type: ignore[attr-defined]
    await stop_bot(running)
    await server.wait_disconnected()
    # Four honest members rate all twelve images while the bot is offline.
    rng = np.random.default_rng(3)
    for k, rater in enumerate(raters):
        for message, q in zip(messages, quality, strict=True):
            value = int(np.clip(round(q + (k - 1.5) * 0.5 + rng.normal(0, 0.5)), 1, 10))
            await server.react(rater, message, emoji[value - 1])
    bot = await start_bot(server, url, running.data_dir, tiny_models[0])
    try:
        await settled(bot, backfills=1)
        async with bot.engine.begin() as conn:  # type: ignore[attr-defined]
            image_ids = list((await conn.execute(select(Image.id))).scalars())
            await conn.execute(
                insert(Embedding),
                [
                    {
                        "image_id": i,
                        "model": "test",
                        "dim": 4,
                        "vector": np.ones(4, np.float32).tobytes(),
                    }
                    for i in image_ids
                ],
            )
        data = await load_database_data(bot.engine, embedding_model="test", scale="numbers-10")  # type: ignore[arg-type]
        assert len(data.panel) == 4 * 12
        _, effects = rater_aware_targets(data.panel)
        assert effects.spam == {}, effects.spam
    finally:
        running.__dict__.update(bot.__dict__)


@sqlite_only
async def test_reroll_is_the_requesters_and_obeys_todays_blocked_terms(
    running: Running, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    _, token = await server.slash(
        ADA, "dream", [{"name": "prompt", "type": 3, "value": "a paper crane"}]
    )
    await server.wait_for(lambda: "done" in server.originals.get(token, {}).get("content", ""))
    original = server.originals[token]
    (reroll,) = [c["custom_id"] for row in original["components"] for c in row["components"]]
    refused_id, _ = await server.click(BOB, int(original["id"]), reroll)
    refusal = await server.wait_for(lambda: server.callbacks.get(refused_id))
    assert refusal[0]["data"]["content"] == "Only the requester or a moderator can reroll this job."
    # The community blocks the word; a reroll of the old job is refused like a new /dream.
    bot = await restart(running, tiny_models[0], blocked_terms=["gore", "crane"])
    try:
        refused_id, _ = await server.click(ADA, int(original["id"]), reroll)
        refusal = await server.wait_for(lambda: server.callbacks.get(refused_id))
        assert refusal[0]["data"]["content"] == (
            "prompt: contains the blocked term 'crane'; please rephrase."
        )
        async with bot.engine.connect() as conn:  # type: ignore[attr-defined]
            assert await conn.scalar(select(func.count()).select_from(Job)) == 1
    finally:
        running.__dict__.update(bot.__dict__)


def copies(server: FakeDiscord, job_id: int, index: int = 0) -> list[int]:
    """Messages carrying image ``index`` of ``job_id``."""
    stem = f"dreamrate-{job_id}-{index + 1}-"
    return [
        mid
        for mid, m in server.messages.items()
        if any(a["filename"].startswith(stem) for a in m["attachments"])
    ]


async def test_a_crash_between_posting_and_recording_posts_once_and_its_ratings_count(
    running: Running, tiny_models, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.community.posts import PostRepository

    server = running.discord
    real = PostRepository.record_own
    sent = asyncio.Event()

    async def crash_before_recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        sent.set()  # the message is out; the process dies before the row is written
        await asyncio.Event().wait()

    monkeypatch.setattr(PostRepository, "record_own", crash_before_recording)
    await server.slash(ADA, "dream", [{"name": "prompt", "type": 3, "value": "one copy only"}])
    await asyncio.wait_for(sent.wait(), timeout=120)
    async with running.engine.connect() as conn:  # type: ignore[attr-defined]
        job_id = int(await conn.scalar(select(Job.id)))
    assert len(copies(server, job_id)) == 1
    monkeypatch.setattr(PostRepository, "record_own", real)
    bot = await restart(running, tiny_models[0])
    try:

        async def recorded() -> int | None:
            async with bot.engine.connect() as conn:  # type: ignore[attr-defined]
                return await conn.scalar(select(Image.discord_message_id))

        for _ in range(600):
            if await recorded():
                break
            await asyncio.sleep(0.05)
        (message,) = copies(server, job_id)  # found, not posted again
        assert await recorded() == message
        await server.react(BOB, message, "7️⃣")
        await settled(bot)
        assert await exported(bot.engine) == {(str(message), str(BOB.id), 7.0)}
    finally:
        running.__dict__.update(bot.__dict__)


async def job_once(engine, predicate) -> Job:  # type: ignore[no-untyped-def]
    """The one job, once ``predicate(job)`` holds (polled; fails after a minute)."""
    for _ in range(1200):
        async with engine.connect() as conn:
            current = (await conn.execute(select(Job))).one_or_none()
        if current is not None and predicate(current):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"the job never got there: {current}")


async def test_three_restarts_during_a_job_spend_none_of_its_attempts(
    discord_server: FakeDiscord, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    """Each stop lands mid-render: the job has 1000 steps (minutes of rendering, where a stop
    takes effect at the next step, well under a second here) and each stop comes once a step
    has been made. Before the last start the job is cut to two steps, so that the test need
    not wait a long render out."""
    server, tiny = discord_server, tiny_models[0]
    data = tmp_path / "data"
    bot = await start_bot(server, database_url, data, tiny, max_steps=1000)
    try:
        _, token = await server.slash(
            ADA,
            "dream",
            [
                {"name": "prompt", "type": 3, "value": "a long render"},
                {"name": "steps", "type": 4, "value": 1000},
            ],
        )
        for restart_number in range(3):
            await job_once(bot.engine, lambda j: j.status is JobStatus.RUNNING and j.progress > 0)
            await stop_bot(bot)  # the worker finishes its step and hands the job back
            await server.wait_disconnected()
            engine = create_engine(database_url)
            try:
                current = await job_once(engine, lambda j: True)
                assert (current.status, current.attempts) == (JobStatus.QUEUED, 0)
                if restart_number == 2:
                    async with engine.begin() as conn:
                        await conn.execute(update(Job).values(steps=2))
            finally:
                await engine.dispose()
            bot = await start_bot(server, database_url, data, tiny, max_steps=1000)
        await server.wait_for(
            lambda: "done" in server.originals.get(token, {}).get("content", ""), timeout=300
        )
        final = await job_once(bot.engine, lambda j: True)
        assert final.status is JobStatus.DONE and final.attempts == 1
        assert len(copies(server, final.id)) == 1
    finally:
        await stop_bot(bot)


def kill_connection_once(engine, pattern: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Terminate the PostgreSQL backend of the first statement matching ``pattern``, just
    before it runs, as a failover or ``pg_terminate_backend`` does."""
    state = {"kills": 0}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _kill(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if state["kills"] == 0 and re.search(pattern, statement):
            state["kills"] += 1
            pid = conn.connection.driver_connection.get_server_pid()
            await_only(_pg_execute(f"SELECT pg_terminate_backend({pid}, 5000)"))

    return state


@pytest.mark.postgres
async def test_killed_connections_during_rate_erase_and_admin_complete_once(
    discord_server: FakeDiscord, postgres_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    bot = await start_bot(discord_server, postgres_url, tmp_path / "data", tiny_models[0])
    server = discord_server
    try:
        (message,) = await dream(server, ADA, "a harbour at dusk")
        await server.react(BOB, message, "6️⃣")
        await settled(bot)
        # /rate: the repost's intent is written on a connection that dies.
        state = kill_connection_once(bot.engine, r"INSERT INTO pending_posts")
        text = await say(server, CY, "rate", [{"name": "count", "type": 4, "value": 1}])
        assert state["kills"] == 1 and "image" in text.lower()
        async with bot.engine.connect() as conn:  # type: ignore[attr-defined]
            posts = (await conn.execute(select(func.count()).select_from(Image))).scalar()
        assert posts == 1
        # /privacy erase: the connection dies inside its transaction; it runs again whole.
        state = kill_connection_once(bot.engine, r"DELETE FROM ratings")
        answer = await say(server, BOB, "privacy", subcommand="erase")
        assert state["kills"] == 1
        assert answer.startswith(
            "Erased 1 rating(s), 0 choice(s) between images, 1 reaction event(s)"
        )
        assert await ratings_of(bot, BOB) == []
        # /admin ban: done once, and said so.
        state = kill_connection_once(bot.engine, r"INSERT INTO guild_bans")
        ban = [{"name": "member", "type": 6, "value": str(DEE.id)}]
        answer = await say(server, MOD, "admin", ban, subcommand="ban")
        assert state["kills"] == 1 and "banned" in answer
        text = await say(server, DEE, "dream", [{"name": "prompt", "type": 3, "value": "x"}])
        assert text == "You are banned from generating and rating images here."
    finally:
        await stop_bot(bot)
