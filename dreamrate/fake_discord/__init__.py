"""A local Discord-compatible server: the test double that the suite and the demo run the
real bot against (REST, gateway, interactions, reactions)."""

from dreamrate.fake_discord.payloads import (
    APP_ID,
    BASIC,
    BOT_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    Member,
)
from dreamrate.fake_discord.server import FakeDiscord

__all__ = [
    "APP_ID",
    "BASIC",
    "BOT_ID",
    "CHANNEL_ID",
    "GUILD_ID",
    "MANAGE_GUILD",
    "FakeDiscord",
    "Member",
]
