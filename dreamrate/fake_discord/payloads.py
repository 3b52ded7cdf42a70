"""Discord's payload shapes, as far as discord.py reads them, for the fake server."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = [
    "APP_ID",
    "BASIC",
    "BOT_ID",
    "BOT_USER",
    "CHANNEL_ID",
    "GUILD_ID",
    "MANAGE_GUILD",
    "Member",
    "guild_payload",
    "json_response",
    "match_route",
    "now_iso",
    "snowflake",
]
_ids = itertools.count(1_100_000_000_000_000_000)
GUILD_ID = 1_000_000_000_000_000_001
CHANNEL_ID = 1_000_000_000_000_000_002
APP_ID = 1_000_000_000_000_000_003
BOT_ID = APP_ID
#: Permission bits of a member with "Manage Server" (plus the basics).
MANAGE_GUILD = 1 << 5
BASIC = (1 << 10) | (1 << 11) | (1 << 6) | (1 << 15) | (1 << 14) | (1 << 16)


def snowflake() -> str:
    return str(next(_ids))


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Member:
    id: int
    name: str
    permissions: int = BASIC
    roles: list[str] = field(default_factory=list)

    def user(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.name,
            "avatar": None,
        }

    def member(self) -> dict[str, Any]:
        return {
            "user": self.user(),
            "roles": self.roles,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(self.permissions),
        }


BOT_USER = {
    "id": str(BOT_ID),
    "username": "dreamrate",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": True,
}


def guild_payload() -> dict[str, Any]:
    """GUILD_CREATE's payload: one guild, one text channel, the bot as its only member."""
    return {
        "id": str(GUILD_ID),
        "name": "dreamers",
        "icon": None,
        "owner_id": "1",
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [
            {
                "id": str(GUILD_ID),
                "name": "@everyone",
                "permissions": str(BASIC),
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "flags": 0,
            }
        ],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "system_channel_flags": 0,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "unavailable": False,
        "member_count": 2,
        "large": False,
        "joined_at": now_iso(),
        "members": [
            {
                "user": BOT_USER,
                "roles": [],
                "joined_at": now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        ],
        "channels": [
            {
                "id": str(CHANNEL_ID),
                "type": 0,
                "name": "dreams",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "guild_id": str(GUILD_ID),
            }
        ],
        "threads": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "voice_states": [],
        "presences": [],
    }


def json_response(data: Any, status: int = 200) -> web.Response:
    # Discord sends exactly "application/json" (discord.py compares the header verbatim).
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def match_route(pattern: str, path: str) -> tuple[str, ...] | None:
    want, have = pattern.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(have):
        return None
    captured = []
    for w, h in zip(want, have, strict=True):
        if w == "*":
            captured.append(h)
        elif w != h:
            return None
    return tuple(captured)
