"""A local Discord-compatible server: the test double that the suite and the demo run the
real bot against (REST, gateway, interactions, reactions, guilds, permissions, rate limits)."""

from dreamrate.fake_discord.payloads import (
    ADD_REACTIONS,
    ALL_TEXT,
    APP_ID,
    ATTACH_FILES,
    BASIC,
    BOT_ID,
    CHANNEL_ID,
    EMBED_LINKS,
    GUILD_B_ID,
    GUILD_ID,
    MANAGE_GUILD,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    Member,
)
from dreamrate.fake_discord.server import FakeDiscord
from dreamrate.fake_discord.world import Channel, Guild

__all__ = [
    "ADD_REACTIONS",
    "ALL_TEXT",
    "APP_ID",
    "ATTACH_FILES",
    "BASIC",
    "BOT_ID",
    "CHANNEL_ID",
    "EMBED_LINKS",
    "GUILD_B_ID",
    "GUILD_ID",
    "MANAGE_GUILD",
    "READ_MESSAGE_HISTORY",
    "SEND_MESSAGES",
    "VIEW_CHANNEL",
    "Channel",
    "FakeDiscord",
    "Guild",
    "Member",
]
