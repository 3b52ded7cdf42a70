"""End to end through the local Discord-compatible server with an unmodified discord.py client."""

from __future__ import annotations

from dreamrate.fake_discord import Member
from tests.databases import sqlite_only


def image_messages(server, token: str) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [
        server.messages[mid]
        for mid in server.followups.get(token, [])
        if server.messages[mid]["attachments"]
    ]


async def test_dream_posts_each_image_as_its_own_message_with_rating_emoji(running) -> None:  # type: ignore[no-untyped-def]
    server = running.discord
    ada, bob = Member(11, "ada"), Member(12, "bob")
    _, ada_token = await server.slash(
        ada,
        "dream",
        [
            {"name": "prompt", "type": 3, "value": "a red fox"},
            {"name": "images", "type": 4, "value": 2},
            {"name": "seed", "type": 4, "value": 7},
        ],
    )
    _, bob_token = await server.slash(
        bob, "dream", [{"name": "prompt", "type": 3, "value": "a lighthouse"}]
    )
    await server.wait_for(
        lambda: (
            len(image_messages(server, ada_token)) == 2
            and len(image_messages(server, bob_token)) == 1
        )
    )
    dream_command = next(c for c in server.commands if c["name"] == "dream")
    options = {o["name"]: o for o in dream_command["options"]}
    assert options["images"]["max_value"] == 4 and options["steps"]["max_value"] == 50
    assert [c["value"] for c in options["model"]["choices"]] == [running.settings.generation.model]
    # Deferred first, then the queue position, then the outcome.
    assert server.callbacks and all(c[0]["type"] == 5 for c in server.callbacks.values())
    edits = [e.get("content", "") for e in server.edits[ada_token]]
    assert any("in the queue" in e or "rendering" in e for e in edits)
    await server.wait_for(lambda: "done, 2 image(s)" in server.originals[ada_token]["content"])
    for message in image_messages(server, ada_token):
        assert message["attachments"][0]["filename"].endswith(".png")
        embed = message["embeds"][0]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert (
            embed["description"] == "a red fox"
            and fields["size"] == "64x64"
            and fields["steps"] == "2"
        )
        assert fields["seed"] in ("7", "8") and "by ada" in embed["footer"]["text"]
    seeds = sorted(
        next(f["value"] for f in m["embeds"][0]["fields"] if f["name"] == "seed")
        for m in image_messages(server, ada_token)
    )
    assert seeds == ["7", "8"]
    for message in image_messages(server, ada_token) + image_messages(server, bob_token):
        await server.wait_for(lambda m=message: len(server.reactions[int(m["id"])]) == 11)
        assert list(server.reactions[int(message["id"])]) == [
            "1️⃣",
            "2️⃣",
            "3️⃣",
            "4️⃣",
            "5️⃣",
            "6️⃣",
            "7️⃣",
            "8️⃣",
            "9️⃣",
            "🔟",
            "🚩",
        ]


async def test_dreamrate_bot_process_logs_in_and_keeps_the_token_secret(
    discord_server, tmp_path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    """`dreamrate bot` as operators run it: connects, syncs commands, stops on SIGTERM; the token never prints."""
    import asyncio
    import json
    import os
    import signal
    import sys
    from pathlib import Path

    from dreamrate.fake_discord import GUILD_ID
    from tests.bot.conftest import TOKEN

    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMRATE_")}
    env.update(
        DISCORD_TOKEN=TOKEN,
        DREAMRATE_DATA_DIR=str(tmp_path / "data"),
        DREAMRATE_DISCORD_API_BASE=discord_server.api_base,
        DREAMRATE_DISCORD_GATEWAY_URL=discord_server.gateway_url,
        DREAMRATE_DISCORD_GUILDS=str(GUILD_ID),
        DREAMRATE_GENERATION_MODEL=str(tiny_models[0]),
        DREAMRATE_LOG_LEVEL="DEBUG",
        # As a log collector reads it: one JSON object a line, the token scrubbed there too.
        DREAMRATE_LOG_FORMAT="json",
    )
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "dreamrate"),
        "bot",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    seen: list[str] = []
    backfilled = asyncio.Event()

    async def read_output() -> None:
        # Read from the start: at DEBUG a full pipe would block the bot mid-start.
        assert process.stdout is not None
        async for line in process.stdout:
            seen.append(line.decode())
            if "backfill:" in seen[-1]:  # the first backfill runs after on_ready
                backfilled.set()

    reader = asyncio.create_task(read_output())
    try:
        await discord_server.wait_connected(timeout=60)
        await discord_server.wait_for(
            lambda: {c["name"] for c in discord_server.commands} >= {"dream", "job", "privacy"}
        )
        await asyncio.wait_for(backfilled.wait(), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=60)
        await asyncio.wait_for(reader, timeout=60)
    output = "".join(seen)
    assert process.returncode == 0, output
    assert TOKEN not in output
    records = [json.loads(line) for line in seen]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert any(m.startswith("connected as dreamrate") for m in messages)
    assert any(m.startswith("backfill: 0 message(s) checked") for m in messages)
    assert {r["level"] for r in records} >= {"INFO", "DEBUG"}
    assert any(r["logger"].startswith("discord.") for r in records)  # libraries' records too


def test_bot_without_token_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_cli import run_cli

    result = run_cli("bot", env={"DREAMRATE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: set DISCORD_TOKEN (or DREAMRATE_DISCORD_TOKEN_FILE) to the bot's token"
    )


@sqlite_only
async def test_reroll_and_cancel_buttons(
    discord_server, database_url, tmp_path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    """Cancel is the requester's: another member pressing it on a job still waiting is refused
    and the job stays queued. The worker runs here, in steps, so the job is waiting for sure."""
    from dreamrate.db.models import JobStatus
    from dreamrate.services import build_worker
    from tests.bot.conftest import start_bot, stop_bot

    server = discord_server
    running = await start_bot(
        server, database_url, tmp_path / "data", tiny_models[0], with_worker=False
    )
    try:
        ada, bob = Member(41, "ada"), Member(42, "bob")
        _, token = await server.slash(
            ada,
            "dream",
            [
                {"name": "prompt", "type": 3, "value": "a paper crane"},
                {"name": "seed", "type": 4, "value": 5},
            ],
        )
        await server.wait_for(
            lambda: "in the queue" in server.originals.get(token, {}).get("content", "")
        )
        original = server.originals[token]
        buttons = [c["custom_id"] for row in original["components"] for c in row["components"]]
        job_id = int(buttons[0].rsplit(":", 1)[1])
        assert buttons == [f"dreamrate:reroll:{job_id}", f"dreamrate:cancel:{job_id}"]
        refused_id, _ = await server.click(bob, int(original["id"]), buttons[1])
        refusal = await server.wait_for(lambda: server.callbacks.get(refused_id))
        assert refusal[0]["data"]["content"] == (
            "Only the requester or a moderator can cancel this job."
        )
        job = await running.bot.repo.get(job_id)
        assert job is not None and job.status is JobStatus.QUEUED and not job.cancel_requested

        worker = build_worker(running.settings, running.bot.repo)
        assert await worker.run_once() == 1
        await server.wait_for(lambda: "done" in server.originals[token].get("content", ""))
        original = server.originals[token]
        buttons = [c["custom_id"] for row in original["components"] for c in row["components"]]
        assert buttons == [f"dreamrate:reroll:{job_id}"]  # cancel gone once done
        # The owner's reroll makes a new job with the same prompt and a new seed.
        _, reroll_token = await server.click(ada, int(original["id"]), buttons[0])
        await server.wait_for(
            lambda: "in the queue" in server.originals.get(reroll_token, {}).get("content", "")
        )
        assert await worker.run_once() == 1
        images = await server.wait_for(lambda: image_messages(server, reroll_token))
        embed = images[0]["embeds"][0]
        assert embed["description"] == "a paper crane"
        assert next(f["value"] for f in embed["fields"] if f["name"] == "seed") != "5"
    finally:
        await stop_bot(running)


@sqlite_only
async def test_after_the_interaction_token_expires_images_go_to_the_channel(
    discord_server, database_url, tmp_path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from sqlalchemy import update

    from dreamrate.db.models import Job
    from dreamrate.db.types import utcnow
    from tests.bot.conftest import start_bot, stop_bot

    running = await start_bot(
        discord_server, database_url, tmp_path / "data", tiny_models[0], with_worker=False
    )
    try:
        _, token = await discord_server.slash(
            Member(51, "late"), "dream", [{"name": "prompt", "type": 3, "value": "slow night"}]
        )
        await discord_server.wait_for(
            lambda: "in the queue" in discord_server.originals.get(token, {}).get("content", "")
        )
        async with running.engine.begin() as conn:
            await conn.execute(
                update(Job).values(interaction_token_expires_at=utcnow() - timedelta(minutes=1))
            )
        from dreamrate.services import build_worker

        worker = build_worker(running.settings, running.bot.repo)
        before = set(discord_server.messages)
        assert await worker.run_once() == 1
        posted = await discord_server.wait_for(
            lambda: [
                m
                for m in set(discord_server.messages) - before
                if discord_server.messages[m]["attachments"]
            ]
        )
        assert posted[0] not in discord_server.followups.get(token, [])  # a plain channel message
        assert discord_server.messages[posted[0]]["embeds"][0]["description"] == "slow night"
    finally:
        await stop_bot(running)
