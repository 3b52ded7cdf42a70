"""The bot in a Discord as real as Discord: several guilds, per-channel permissions, rate
limits, deleted channels, DMs, hostile members. Each guild is its own community."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from dreamrate.db.engine import create_engine
from dreamrate.db.models import Image, Job, JobStatus, RatingEvent
from dreamrate.fake_discord import (
    ATTACH_FILES,
    BASIC,
    CHANNEL_ID,
    GUILD_B_ID,
    GUILD_ID,
    MANAGE_GUILD,
    FakeDiscord,
    Member,
)
from tests.bot.conftest import settled, start_bot, stop_bot
from tests.bot.test_moderation_e2e import reply
from tests.bot.test_ratings_e2e import dream, exported
from tests.databases import sqlite_only

EVE, FAY, GUS = Member(32, "eve"), Member(33, "fay"), Member(34, "gus")
#: A moderator of guild B only.
MODB = Member(41, "modb")
#: A moderator of guild A (Manage Server there).
MODA = Member(42, "moda", permissions=BASIC | MANAGE_GUILD)


def b_channel(server: FakeDiscord) -> int:
    return server.channels_of(GUILD_B_ID)[0]


def a_second_channel(server: FakeDiscord) -> int:
    return server.channels_of(GUILD_ID)[1]


async def say(server: FakeDiscord, member: Member, name: str, options=None, **kw) -> str:  # type: ignore[no-untyped-def]
    """Run a command and return the reply's text (its first response or first follow-up)."""
    interaction_id, token = await server.slash(member, name, options, **kw)
    first = await reply(server, interaction_id)
    if first["type"] == 5:  # deferred: the answer is the first follow-up or an edit

        def answered() -> str | None:
            for m in server.followups.get(token, []):
                if server.messages[m]["content"]:
                    return server.messages[m]["content"]
            edits = server.edits.get(token)
            return edits[-1].get("content") if edits else None

        return await server.wait_for(answered)
    return first["data"]["content"]


@sqlite_only
async def test_a_guild_moderator_has_no_power_in_another_guild(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    server.set_member_permissions(GUILD_B_ID, MODB, BASIC | MANAGE_GUILD)
    (message,) = await dream(server, EVE, "a lighthouse in guild A")
    await server.react(FAY, message, "🚩")
    await server.react(EVE, message, "7️⃣")
    await settled(running)
    in_b = {"guild": GUILD_B_ID}
    ban = [{"name": "member", "type": 6, "value": str(EVE.id)}]
    assert "banned" in await say(server, MODB, "admin", ban, subcommand="ban", **in_b)
    remove = [{"name": "message_id", "type": 3, "value": str(message)}]
    assert (
        await say(server, MODB, "admin", remove, subcommand="remove", **in_b)
        == f"Message {message} is not a generated image of this server."
    )
    assert await say(server, MODB, "admin", subcommand="flags", **in_b) == "No open reports."
    # ... and in guild A, B's moderator is nobody.
    assert (
        await say(server, MODB, "admin", subcommand="flags")
        == "Only moderators (Manage Server) can use /admin."
    )
    # Nothing changed in guild A: the image is there, Eve still rates and generates there.
    assert message in server.messages
    async with running.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).where(Image.removed.is_(True))) == 0
    # Fay's report is still open in guild A (it keeps the image out of exports until a
    # moderator of A decides), and Eve's rating stands.
    assert "1 report(s)" in await say(server, MODA, "admin", subcommand="flags")
    assert await exported(running.engine) == set()
    dismiss = [{"name": "message_id", "type": 3, "value": str(message)}]
    closed = await say(server, MODA, "admin", dismiss, subcommand="dismiss")
    assert closed == "Closed 1 report(s); the image stays."
    assert await exported(running.engine) == {(str(message), str(EVE.id), 7.0)}
    (again,) = await dream(server, EVE, "still welcome in guild A")
    # In guild B, though, Eve is banned: no /dream, and her reactions there do not count.
    text = await say(server, EVE, "dream", [{"name": "prompt", "type": 3, "value": "x"}], **in_b)
    assert text == "You are banned from generating and rating images here."
    assert again in server.messages


@sqlite_only
async def test_rate_job_and_stats_stay_inside_their_guild(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    (message,) = await dream(server, EVE, "only for guild A")
    await server.react(FAY, message, "8️⃣")
    await settled(running)
    in_b = {"guild": GUILD_B_ID}
    rate = [{"name": "count", "type": 4, "value": 3}]
    assert await say(server, FAY, "rate", rate, **in_b) == "No images to rate yet: try /dream!"
    async with running.engine.connect() as conn:
        job_id = await conn.scalar(select(Job.id))
    job = [{"name": "id", "type": 4, "value": job_id}]
    assert await say(server, FAY, "job", job, **in_b) == f"There is no job {job_id}."
    assert (await say(server, FAY, "job", job)).startswith(f"Job {job_id}: only for guild A")
    stats_b = await say(server, FAY, "stats", **in_b)
    assert "You have rated 0 image(s)" in stats_b and "Server: 0 rating(s)" in stats_b
    assert "You have rated 1 image(s): 8×1." in await say(server, FAY, "stats")


@sqlite_only
async def test_generation_and_rating_are_guild_only_and_privacy_works_in_dms(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    for name in ("dream", "rate", "stats", "job", "admin"):
        with pytest.raises(LookupError, match="not offered in DMs"):
            await server.slash(EVE, name, dm=True)
    interaction_id, _ = await server.slash(EVE, "privacy", subcommand="export", dm=True)
    answer = await reply(server, interaction_id)
    assert answer["data"]["content"] == "Your data:" and answer["data"]["flags"] & 64


@sqlite_only
async def test_dream_where_the_bot_cannot_post_is_refused_then_a_normal_dream_is_delivered(
    running,
) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    gallery = a_second_channel(server)
    server.set_bot_permissions(gallery, BASIC & ~ATTACH_FILES)
    text = await say(
        server, EVE, "dream", [{"name": "prompt", "type": 3, "value": "here?"}], channel=gallery
    )
    assert text == (
        "I can't post images here: I'm missing the Attach Files permission in this channel. "
        "Ask a moderator, or use another channel."
    )
    async with running.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Job)) == 0
    assert len(await dream(server, EVE, "over here then")) == 1


@sqlite_only
async def test_a_deleted_channel_fails_its_job_and_blocks_nobody(
    discord_server, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.services import build_worker

    server = discord_server
    running = await start_bot(
        server, database_url, tmp_path / "data", tiny_models[0], with_worker=False
    )
    try:
        gallery = a_second_channel(server)
        _, doomed = await server.slash(
            EVE, "dream", [{"name": "prompt", "type": 3, "value": "doomed"}], channel=gallery
        )
        _, fine = await server.slash(FAY, "dream", [{"name": "prompt", "type": 3, "value": "fine"}])
        # Both queued and answered (the reply edited with the queue position), then the
        # channel goes: between the request and the delivery.
        await server.wait_for(
            lambda: all(server.originals.get(t, {}).get("content") for t in (doomed, fine))
        )
        await server.delete_channel(gallery)
        worker = build_worker(running.settings, running.bot.repo)
        while await worker.run_once():
            pass
        await server.wait_for(
            lambda: [m for m in server.followups.get(fine, []) if server.messages[m]["attachments"]]
        )
        failed = await _wait_job_status(running.engine, "doomed", JobStatus.FAILED)
        assert failed.error == "could not post its images (404 Unknown Channel); 0 of 1 posted"
        assert server.invalid_requests == 0  # 404s are not held against the bot, no 429s
    finally:
        await stop_bot(running)


async def _wait_job_status(engine, prompt: str, status: JobStatus, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as conn:
            job = (await conn.execute(select(Job).where(Job.prompt == prompt))).one()
        if job.status == status or asyncio.get_running_loop().time() > deadline:
            assert job.status == status, (job.status, job.error)
            return job
        await asyncio.sleep(0.1)


@sqlite_only
async def test_losing_a_channel_never_stops_recording_elsewhere(
    discord_server, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    server = discord_server
    bot = await start_bot(server, database_url, tmp_path / "data", tiny_models[0])
    gallery = a_second_channel(server)
    (lost,) = await dream(server, EVE, "in the gallery", channel=gallery)
    (kept,) = await dream(server, EVE, "in the main channel")
    await server.react(FAY, lost, "3️⃣")
    await settled(bot)
    await stop_bot(bot)
    await server.wait_disconnected()
    server.set_bot_permissions(gallery, 0)  # the bot lost access while it was away
    await server.react(GUS, kept, "9️⃣")  # made while the bot was away: backfill finds it
    bot = await start_bot(server, database_url, tmp_path / "data", tiny_models[0])
    try:
        await settled(bot, backfills=1)
        await server.react(FAY, kept, "5️⃣")  # live, after the refused channel
        await settled(bot)
        assert await exported(bot.engine) == {
            (str(lost), str(FAY.id), 3.0),  # kept from before; Discord can't be read there now
            (str(kept), str(GUS.id), 9.0),
            (str(kept), str(FAY.id), 5.0),
        }
        assert server.statuses[403] == 1  # one refusal, then the channel is left alone
        assert bot.bot.reactions.received > 0  # type: ignore[attr-defined]
    finally:
        await stop_bot(bot)


@sqlite_only
async def test_a_member_toggling_one_emoji_500_times_is_throttled(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    (message,) = await dream(server, EVE, "a toggle target")
    for _ in range(250):
        await server.react(GUS, message, "4️⃣")
        await server.unreact(GUS, message, "4️⃣")
    await server.react(FAY, message, "6️⃣")  # an honest rating in the middle of the storm
    await server.react(GUS, message, "2️⃣")  # where the toggler ends up
    await settled(running)
    async with running.engine.connect() as conn:
        logged = await conn.scalar(
            select(func.count()).where(RatingEvent.discord_user_id == GUS.id)
        )
    recorder = running.bot.reactions
    assert recorder.throttled > 400 and logged < 100  # the log stays bounded
    assert await exported(running.engine) == {
        (str(message), str(FAY.id), 6.0),
        (str(message), str(GUS.id), 2.0),  # repaired from what Discord shows
    }


@sqlite_only
async def test_a_full_inbox_reconciles_instead_of_growing(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    (message,) = await dream(server, EVE, "a busy image")
    running.bot.reactions.max_queued = 3  # type: ignore[attr-defined]
    members = [Member(600 + k, f"m{k}") for k in range(30)]
    for k, member in enumerate(members):
        await server.react(member, message, ["1️⃣", "5️⃣", "🔟"][k % 3])
    await settled(running)
    assert running.bot.reactions.overflowed > 0  # type: ignore[attr-defined]
    expected = {(str(message), str(m.id), [1.0, 5.0, 10.0][k % 3]) for k, m in enumerate(members)}
    assert await exported(running.engine) == expected  # nothing lost to the full inbox


@sqlite_only
async def test_a_burst_under_the_real_buckets_delivers_everything(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    members = [Member(700 + k, f"burst{k}") for k in range(3)]
    results = await asyncio.gather(
        *(dream(server, m, f"burst {k}", images=2) for k, m in enumerate(members))
    )
    assert sum(len(r) for r in results) == 6
    assert all(len(server.reactions[m]) == 11 for r in results for m in r)
    # discord.py reads the X-RateLimit headers and waits before it would be refused.
    assert server.rate_limited <= 2 and server.invalid_requests <= 2


@asynccontextmanager
async def a_writer_holding(database_url: str) -> AsyncIterator[None]:
    """Another process's write transaction, open on the jobs and the members meanwhile:
    SQLite's one write lock, PostgreSQL's EXCLUSIVE lock (reads go on, writes wait)."""
    holder = create_engine(database_url)
    try:
        if holder.dialect.name == "postgresql":
            async with holder.begin() as conn:
                await conn.execute(text("LOCK TABLE jobs, users IN EXCLUSIVE MODE"))
                yield
                await conn.rollback()
        else:
            async with holder.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
                yield
                await conn.rollback()
    finally:
        await holder.dispose()


async def test_acknowledged_first_while_a_render_runs_and_a_writer_holds_the_database(
    discord_server: FakeDiscord, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    """Discord drops an interaction not answered within 3 s, so the bot answers before any
    work that can wait: a render held mid-step and a writer holding the database do not
    keep /dream from being acknowledged nor /stats from being answered; /dream queues its
    job once the writer lets go. How fast the answers come under load is a benchmark's
    business (benchmarks/bench_delivery.py: acknowledgement median, p99, first)."""
    from dreamrate.generation.pipeline import load_text2image
    from dreamrate.generation.worker import PipelineCache
    from dreamrate.services import build_worker

    server = discord_server
    server.ack_deadline = math.inf  # late answers would fail below as missing, not as slow
    entered, release = threading.Event(), threading.Event()

    def held(model: str, **kwargs: object):  # type: ignore[no-untyped-def]
        pipe = load_text2image(model, **kwargs)

        def hold(module, args):  # type: ignore[no-untyped-def]
            entered.set()
            release.wait(120)

        pipe.unet.register_forward_pre_hook(hold)
        return pipe

    running = await start_bot(
        server, database_url, tmp_path / "data", tiny_models[0], with_worker=False
    )
    worker = build_worker(running.settings, running.bot.repo)  # type: ignore[attr-defined]
    worker.pipelines = PipelineCache(loader=held, device="cpu")
    rendering: asyncio.Task[int | None] | None = None
    try:
        first, busy = await server.slash(
            FAY, "dream", [{"name": "prompt", "type": 3, "value": "busy"}]
        )
        assert (await reply(server, first))["type"] == 5  # deferred before anything else
        await server.wait_for(lambda: "in the queue" in server.originals[busy].get("content", ""))
        rendering = asyncio.create_task(worker.run_once())
        assert await asyncio.to_thread(entered.wait, 60), "the render never started"
        async with a_writer_holding(database_url):
            during, token = await server.slash(
                EVE, "dream", [{"name": "prompt", "type": 3, "value": "meanwhile"}]
            )
            stats, _ = await server.slash(GUS, "stats")
            assert (await reply(server, during))["type"] == 5
            answer = await reply(server, stats)
            assert answer["type"] == 4 and "You have rated 0 image(s)" in answer["data"]["content"]
            assert not rendering.done()  # both answered while the render is held
            async with running.engine.connect() as conn:  # type: ignore[attr-defined]
                assert await conn.scalar(select(func.count()).select_from(Job)) == 1
        # The writer gone, the acknowledged /dream queues its job.
        await server.wait_for(lambda: "in the queue" in server.originals[token].get("content", ""))
        release.set()
        assert await asyncio.wait_for(rendering, timeout=60) == 1
    finally:
        release.set()
        if rendering is not None:
            await asyncio.gather(rendering, return_exceptions=True)
        await stop_bot(running)


@sqlite_only
async def test_rate_obeys_bans_the_allow_list_and_a_cooldown_and_reuses_reposts(
    discord_server, database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.community.guild_settings import update_guild_settings
    from dreamrate.community.moderation import set_banned

    server = discord_server
    running = await start_bot(
        server, database_url, tmp_path / "data", tiny_models[0], discord={"rate_cooldown": 3600}
    )
    try:
        (message,) = await dream(server, EVE, "rate me")
        rate = [{"name": "count", "type": 4, "value": 1}]
        first = await say(server, FAY, "rate", rate)
        assert first == "Posted 1 image(s) to rate."
        assert (await say(server, FAY, "rate", rate)).startswith("You can use /rate again in")
        # Another member in the same channel is pointed at the repost, not given another.
        again = await say(server, GUS, "rate", rate)
        assert again.startswith("Posted 0 image(s) to rate. Already here, waiting for your rating:")
        await set_banned(running.engine, GUILD_ID, EVE.id, True)
        assert (
            await say(server, EVE, "rate", rate)
            == "You are banned from generating and rating images here."
        )
        await update_guild_settings(running.engine, GUILD_ID, allowed_channel_ids=[CHANNEL_ID])
        assert (
            await say(server, Member(35, "hal"), "rate", rate, channel=a_second_channel(server))
            == f"/rate is not allowed in this channel; use <#{CHANNEL_ID}>."
        )
        assert message in server.messages
    finally:
        await stop_bot(running)
