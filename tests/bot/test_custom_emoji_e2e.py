"""A guild's custom emoji as a rating emoji, and moderators clearing reactions, through the
real bot: Discord names a custom emoji by its id (``{"id": "…", "name": "dreamy"}``), and
clearing sends one event for the whole message or emoji, not a removal per member."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamrate.exports.rating_export import current_ratings
from dreamrate.fake_discord import GUILD_ID, FakeDiscord, Member
from dreamrate.fake_discord.world import default_world
from tests.bot.conftest import settled, start_bot, stop_bot

ADA, BOB = Member(91, "ada"), Member(92, "bob")
DREAMY = next(i for i, name in default_world()[GUILD_ID].emojis.items() if name == "dreamy")
#: How a server's owner writes a custom emoji in DREAMRATE_RATING_EMOJIS (as Discord shows it).
CUSTOM = f"<:dreamy:{DREAMY}>"


async def exported(engine) -> set[tuple[str, str, float]]:  # type: ignore[no-untyped-def]
    return {
        (row["message_id"], row["rater_id"], row["rating"]) for row in await current_ratings(engine)
    }


async def test_a_custom_emoji_rates_and_cleared_reactions_unrate(
    discord_server: FakeDiscord,
    sqlite_url: str,
    tmp_path: Path,
    tiny_models,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DREAMRATE_RATING_EMOJIS", f"1️⃣,2️⃣,{CUSTOM}")
    monkeypatch.setenv("DREAMRATE_RATING_VALUES", "1,2,3")
    running = await start_bot(discord_server, sqlite_url, tmp_path / "data", tiny_models[0])
    server = running.discord
    try:
        _, token = await server.slash(
            ADA, "dream", [{"name": "prompt", "type": 3, "value": "an owl at dusk"}]
        )

        def seeded() -> int | None:
            for m in server.followups.get(token, []):
                if server.messages[m]["attachments"] and len(server.reactions[m]) == 4:
                    return m
            return None

        message = await server.wait_for(seeded)
        # The bot seeded the custom emoji by its id, as Discord keys it.
        assert list(server.reactions[message]) == ["1️⃣", "2️⃣", f"dreamy:{DREAMY}", "🚩"]
        await server.react(ADA, message, CUSTOM)
        await server.react(BOB, message, "2️⃣")
        await settled(running)
        assert await exported(running.engine) == {
            (str(message), str(ADA.id), 3.0),
            (str(message), str(BOB.id), 2.0),
        }
        # A moderator removes every :dreamy: (one MESSAGE_REACTION_REMOVE_EMOJI event).
        await server.clear_reactions(message, CUSTOM)
        await settled(running)
        assert await exported(running.engine) == {(str(message), str(BOB.id), 2.0)}
        # Then every reaction (MESSAGE_REACTION_REMOVE_ALL): no rating stays.
        await server.clear_reactions(message)
        await settled(running)
        assert await exported(running.engine) == set()
    finally:
        await stop_bot(running)
