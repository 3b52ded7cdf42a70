"""Registered models through the local Discord-compatible server: /dream offers them, renders
with them, and /admin models lists them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from dreamrate.db.models import Job
from dreamrate.fake_discord import BASIC, MANAGE_GUILD, Member
from dreamrate.generation.served_models import remove_model
from tests.bot.conftest import start_bot, stop_bot
from tests.bot.test_arena_e2e import register_a_lora
from tests.bot.test_discord_world_e2e import say
from tests.bot.test_dream_e2e import image_messages
from tests.databases import sqlite_only

pytestmark = pytest.mark.slow
MOD = Member(61, "mod", permissions=BASIC | MANAGE_GUILD)
ADA = Member(62, "ada")


@sqlite_only
async def test_dream_offers_and_renders_a_registered_lora(
    discord_server, database_url, tmp_path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    tiny = tiny_models[0]
    await register_a_lora(tmp_path, database_url, tiny, name="red")

    running = await start_bot(discord_server, database_url, tmp_path / "data", tiny)
    try:
        server = running.discord
        dream = next(c for c in server.commands if c["name"] == "dream")
        model = next(o for o in dream["options"] if o["name"] == "model")
        assert [c["value"] for c in model["choices"]] == [str(tiny), "red"]
        listed = await say(server, MOD, "admin", subcommand="models")
        assert f"red: LoRA on {tiny}" in listed and "restarts" not in listed

        prompt = [
            {"name": "prompt", "type": 3, "value": "a red fox"},
            {"name": "seed", "type": 4, "value": 7},
        ]
        pictures = []
        for model in ("red", str(tiny)):  # the same prompt and seed, with and without the LoRA
            _, token = await server.slash(
                ADA, "dream", [*prompt, {"name": "model", "type": 3, "value": model}]
            )
            (message,) = await server.wait_for(lambda t=token: image_messages(server, t))
            (png,) = server.files[int(message["id"])]
            pictures.append(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16))
        async with running.engine.connect() as conn:  # type: ignore[attr-defined]
            jobs = (await conn.execute(select(Job.model, Job.status).order_by(Job.id))).all()
        assert [(m, s.value) for m, s in jobs] == [("red", "done"), (str(tiny), "done")]
        with_lora, base = pictures
        change = int(np.abs(with_lora - base).max())
        assert change > 10, f"the LoRA changed no pixel by more than {change}/255"

        # Removed while the bot runs: /dream refuses it at once, in one ephemeral line.
        await remove_model(running.engine, "red")  # type: ignore[arg-type]
        refused = await say(
            server, ADA, "dream", [*prompt, {"name": "model", "type": 3, "value": "red"}]
        )
        assert "'red' is not available" in refused
    finally:
        await stop_bot(running)
