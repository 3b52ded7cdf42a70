"""/arena through the local Discord-compatible server: a blind pair of two models' images,
judged with the comparison emoji, named when the round closes, counted by the report."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from sqlalchemy import select

from dreamrate.community.arena_results import arena_report
from dreamrate.db.engine import create_engine
from dreamrate.db.migrate import upgrade
from dreamrate.db.models import ArenaRound, Job
from dreamrate.fake_discord import Member
from dreamrate.generation.served_models import add_model, spec_for
from dreamrate.retraining.finetune import FinetuneOptions, finetune
from tests.bot.conftest import start_bot, stop_bot
from tests.bot.test_discord_world_e2e import say
from tests.databases import sqlite_only

pytestmark = pytest.mark.slow
ADA, BOB, CY = Member(71, "ada"), Member(72, "bob"), Member(73, "cy")
LEFT, RIGHT, TIE = "⬅️", "➡️", "🟰"


async def register_a_lora(tmp_path, database_url, tiny, name: str = "community-v1") -> None:  # type: ignore[no-untyped-def]
    """A two-step LoRA of the tiny model, registered as ``name`` before the bot starts."""
    shard = tmp_path / "images" / "00000"
    shard.mkdir(parents=True)
    Image.new("RGB", (32, 32), (230, 20, 20)).save(shard / "000000000.jpg")
    options = FinetuneOptions(steps=2, rank=2, lr=0.05, resolution=32, batch_size=1)
    finetune(tmp_path / "images", str(tiny), tmp_path / "lora", options, show_progress=False)
    engine = create_engine(database_url)
    await upgrade(engine)
    lora = spec_for(name, path=None, lora=tmp_path / "lora", base=str(tiny))
    await add_model(engine, lora)
    await engine.dispose()


@sqlite_only
async def test_an_arena_round_is_blind_until_it_closes_and_its_judgements_count(
    discord_server, database_url, tmp_path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    tiny = tiny_models[0]
    await register_a_lora(tmp_path, database_url, tiny)

    # Rounds stay open 6 s here (a day by default).
    running = await start_bot(
        discord_server, database_url, tmp_path / "data", tiny, discord={"arena_hours": 6 / 3600}
    )
    try:
        server = running.discord
        before = set(server.messages)
        started = await say(
            server, ADA, "arena", [{"name": "prompt", "type": 3, "value": "a quiet harbour"}]
        )
        assert started.startswith("Arena round started") and "a quiet harbour" in started

        def arena_post() -> int | None:
            for mid, message in server.messages.items():
                names = [a["filename"] for a in message["attachments"]]
                if mid not in before and any("dreamrate-arena-" in n for n in names):
                    return mid if len(server.reactions[mid]) == 3 else None
            return None

        post = await server.wait_for(arena_post)
        # Only the pair was posted: neither job was delivered as an image of its own.
        new = [m for m in server.messages if m not in before and server.messages[m]["attachments"]]
        assert new == [post]
        async with running.engine.connect() as conn:  # type: ignore[attr-defined]
            (round_,) = (await conn.execute(select(ArenaRound))).all()
            models = dict((await conn.execute(select(Job.id, Job.model))).all())
        left, right = models[round_.left_job_id], models[round_.right_job_id]
        assert {left, right} == {str(tiny), "community-v1"} and round_.status == "open"
        shown = json.dumps(server.messages[post]["embeds"]) + server.messages[post]["content"]
        assert "community-v1" not in shown and "tiny-sd" not in shown and "a quiet harbour" in shown

        await server.react(ADA, post, LEFT)
        await server.react(BOB, post, LEFT)
        await server.react(CY, post, TIE)

        def named() -> bool:
            embed = server.messages[post]["embeds"][0]
            return any(f["name"] == "left" for f in embed.get("fields", []))

        await server.wait_for(named, timeout=60)
        fields = {f["name"]: f["value"] for f in server.messages[post]["embeds"][0]["fields"]}
        shown_name = {str(tiny): "tiny-sd", "community-v1": "community-v1"}
        assert (fields["left"], fields["right"]) == (shown_name[left], shown_name[right])

        report = await arena_report(running.engine)  # type: ignore[arg-type]
        (pair,) = report.pairs
        assert pair.judgements == 3 and pair.ties == 1
        first_won = 2 if left == pair.first else 0
        assert (pair.wins, pair.losses) == (first_won, 2 - first_won)
        # Choices after the round closed do not count.
        await server.react(Member(74, "dee"), post, RIGHT)
        await server.wait_for(lambda: running.bot.reactions.received >= 4)  # type: ignore[attr-defined]
        await running.bot.reactions.drained()  # type: ignore[attr-defined]
        assert (await arena_report(running.engine)).pairs[0].judgements == 3  # type: ignore[arg-type]
    finally:
        await stop_bot(running)


@sqlite_only
async def test_arena_needs_two_models(running) -> None:  # type: ignore[no-untyped-def]
    answer = await say(running.discord, ADA, "arena")
    assert "needs two models" in answer and "dreamrate models add" in answer


@sqlite_only
async def test_the_feed_keeps_an_arena_round_going_once_a_moderator_turns_it_on(
    discord_server, database_url, tmp_path, tiny_models, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.bot import arena_rounds
    from dreamrate.fake_discord import BASIC, CHANNEL_ID, MANAGE_GUILD

    # The arena's own look at the feeds comes an hour apart here: the round below starts
    # because the moderator turned the arena on, not at the next periodic look.
    monkeypatch.setattr(arena_rounds, "FEED_CHECK_SECONDS", 3600.0)
    tiny = tiny_models[0]
    await register_a_lora(tmp_path, database_url, tiny)
    running = await start_bot(discord_server, database_url, tmp_path / "data", tiny)
    try:
        server = running.discord
        mod = Member(75, "mod", permissions=BASIC | MANAGE_GUILD)
        # Rounds start only where moderators asked for them.
        async with running.engine.connect() as conn:  # type: ignore[attr-defined]
            assert (await conn.execute(select(ArenaRound))).all() == []
        options = [
            {"name": "channel", "type": 7, "value": str(CHANNEL_ID)},
            {"name": "arena", "type": 5, "value": True},
        ]
        answer = await say(server, mod, "admin", options, subcommand="feed")
        assert "an arena round always going" in answer

        def arena_posts() -> list[int]:
            return [
                mid
                for mid, m in server.messages.items()
                if any("dreamrate-arena-" in a["filename"] for a in m["attachments"])
                and int(m["channel_id"]) == CHANNEL_ID
                and len(server.reactions[mid]) == 3  # seeded once the round is recorded open
            ]

        (post,) = await server.wait_for(arena_posts, timeout=120)
        async with running.engine.connect() as conn:  # type: ignore[attr-defined]
            rounds = (await conn.execute(select(ArenaRound))).all()
        assert len(rounds) == 1 and rounds[0].status == "open"  # one at a time
        assert "community-v1" not in json.dumps(server.messages[post]["embeds"])
    finally:
        await stop_bot(running)
