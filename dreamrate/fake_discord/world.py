"""The fake server's world: guilds with text channels, roles and custom emoji, DMs, and what
the bot may do.

The default world has two guilds, each with a few text channels and custom emoji, and the
bot a member of both, so tests see what a bot invited to several communities sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dreamrate.fake_discord.payloads import (
    ALL_TEXT,
    BASIC,
    BOT_USER,
    CHANNEL_ID,
    GUILD_B_ID,
    GUILD_ID,
    member_fields,
    now_iso,
)

__all__ = ["Channel", "Guild", "default_world"]


@dataclass
class Channel:
    """A text channel (``guild_id`` set) or a DM with one member (``guild_id`` None)."""

    id: int
    name: str
    guild_id: int | None
    #: What the bot may do here; changed mid-run with :meth:`FakeDiscord.set_bot_permissions`.
    bot_permissions: int = ALL_TEXT
    deleted: bool = False

    def payload(self) -> dict[str, Any]:
        if self.guild_id is None:
            return {
                "id": str(self.id),
                "type": 1,
                "flags": 0,
                "recipients": [],
                "last_message_id": None,
            }
        return {
            "id": str(self.id),
            "type": 0,
            "flags": 0,
            "name": self.name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "guild_id": str(self.guild_id),
            "last_message_id": None,
            "parent_id": None,
            "topic": None,
            "rate_limit_per_user": 0,
        }


@dataclass
class Guild:
    """A community: its channels, roles (id -> name), custom emoji (id -> name) and
    per-member permissions."""

    id: int
    name: str
    channels: dict[int, Channel] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    emojis: dict[int, str] = field(default_factory=dict)
    #: Member id -> permissions here, overriding the member's own default.
    member_permissions: dict[int, int] = field(default_factory=dict)
    premium_tier: int = 0

    def role_ids(self, names: list[str]) -> list[int]:
        return [rid for rid, name in self.roles.items() if name in names]

    def payload(self) -> dict[str, Any]:
        everyone = {
            "id": str(self.id),
            "name": "@everyone",
            "permissions": str(BASIC),
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "icon": None,
            "unicode_emoji": None,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        roles = [
            {**everyone, "id": str(rid), "name": name, "position": k + 1}
            for k, (rid, name) in enumerate(self.roles.items())
        ]
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": "1",
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [everyone, *roles],
            "emojis": [
                {
                    "id": str(eid),
                    "name": name,
                    "roles": [],
                    "require_colons": True,
                    "managed": False,
                    "animated": False,
                    "available": True,
                }
                for eid, name in self.emojis.items()
            ],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "system_channel_flags": 0,
            "premium_tier": self.premium_tier,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "joined_at": now_iso(),
            "members": [member_fields(BOT_USER)],
            "channels": [c.payload() for c in self.channels.values() if not c.deleted],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "voice_states": [],
            "presences": [],
        }


def default_world() -> dict[int, Guild]:
    """Guild A ("dreamers": #dreams, #gallery, #chat; custom emoji :dreamy: and :meh:) and
    guild B ("nightowls": #b-dreams, #b-chat; :owl:), each with a "moderators" role."""
    a, b = Guild(GUILD_ID, "dreamers"), Guild(GUILD_B_ID, "nightowls")
    for guild, names, first in (
        (a, ("dreams", "gallery", "chat"), CHANNEL_ID),
        (b, ("b-dreams", "b-chat"), GUILD_B_ID + 1),
    ):
        for k, name in enumerate(names):
            cid = first if k == 0 else guild.id + 100 + k
            guild.channels[cid] = Channel(cid, name, guild.id)
        guild.roles[guild.id + 50] = "moderators"
    a.emojis = {GUILD_ID + 60: "dreamy", GUILD_ID + 61: "meh"}
    b.emojis = {GUILD_B_ID + 60: "owl"}
    return {a.id: a, b.id: b}
