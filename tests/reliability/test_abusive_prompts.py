"""Hostile and odd prompts through the real bot: stored and shown safely, or refused with a reason."""

from __future__ import annotations

from pathlib import Path

import discord
import pytest
from sqlalchemy import func, select, text

from dreamrate.db.models import Job
from dreamrate.fake_discord import FakeDiscord, Member
from tests.bot.conftest import start_bot, stop_bot
from tests.bot.test_ratings_e2e import dream

pytestmark = pytest.mark.slow

EVE = Member(71, "eve")

ACCEPTED = {
    # typed -> stored (bidi overrides stripped; zero-width joiners kept for emoji)
    "a\u200bcat \U0001f469\u200d\U0001f3a8 painter": "a\u200bcat \U0001f469\u200d\U0001f3a8 painter",
    "\u202eevil\u202c reversed \u2067text\u2069": "evil reversed text",
    "\U0001f3a8\U0001f305\U0001f98a": "\U0001f3a8\U0001f305\U0001f98a",
    "'); DROP TABLE jobs; -- \" OR 1=1": "'); DROP TABLE jobs; -- \" OR 1=1",
    "**bold** __under__ @everyone @here <@&1> [link](http://evil.example) `code` ||spoiler||": (
        "**bold** __under__ @everyone @here <@&1> [link](http://evil.example) `code` ||spoiler||"
    ),
}


async def test_odd_prompts_are_stored_verbatim_and_shown_escaped(
    database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    server = FakeDiscord()
    await server.start()
    running = await start_bot(
        server, database_url, tmp_path / "data", tiny_models[0], per_user_queue_cap=10
    )
    try:
        for typed, stored in ACCEPTED.items():
            (message,) = await dream(server, EVE, typed)
            shown = server.messages[message]["embeds"][0]["description"]
            assert shown == discord.utils.escape_markdown(stored)
            async with running.engine.connect() as conn:  # type: ignore[attr-defined]
                prompts = set((await conn.execute(select(Job.prompt))).scalars())
            assert stored in prompts
        # Nothing the bot sent could ping everyone, whatever the prompts said.
        assert not any(m["mention_everyone"] for m in server.messages.values())
        # The injection string was data: the jobs table is intact and counts every job.
        async with running.engine.connect() as conn:  # type: ignore[attr-defined]
            assert await conn.scalar(select(func.count()).select_from(Job)) == len(ACCEPTED)
            assert await conn.scalar(text("SELECT count(*) FROM jobs")) == len(ACCEPTED)

        interaction_id, _ = await server.slash(
            EVE, "dream", [{"name": "prompt", "type": 3, "value": "\U0001f98a" * 10_000}]
        )
        reply = await server.wait_for(lambda: server.callbacks.get(interaction_id))
        assert "data" in reply[0], reply
        assert reply[0]["data"]["flags"] & 64
        assert reply[0]["data"]["content"] == "prompt: must be at most 1000 characters, got 10000."
        for invisible in ("\u200b\u200b", "\u202e\u202c", "\n\t "):
            interaction_id, _ = await server.slash(
                EVE, "dream", [{"name": "prompt", "type": 3, "value": invisible}]
            )
            reply = await server.wait_for(lambda i=interaction_id: server.callbacks.get(i))
            assert reply[0]["data"]["content"] in (
                "prompt: must not be empty.",
                "prompt: must contain visible text.",
            ), reply
    finally:
        await stop_bot(running)
        await server.stop()
