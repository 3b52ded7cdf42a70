"""Discord's payload shapes and error bodies, as far as discord.py reads them."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = [
    "ADD_REACTIONS",
    "ALL_TEXT",
    "APP_ID",
    "ATTACH_FILES",
    "BASIC",
    "BOT_ID",
    "BOT_TOKEN",
    "BOT_USER",
    "CHANNEL_ID",
    "EMBED_LINKS",
    "ERRORS",
    "GUILD_B_ID",
    "GUILD_ID",
    "MANAGE_GUILD",
    "MANAGE_MESSAGES",
    "READ_MESSAGE_HISTORY",
    "SEND_MESSAGES",
    "VIEW_CHANNEL",
    "Member",
    "error_response",
    "invalid_form_body",
    "json_response",
    "match_route",
    "now_iso",
    "snowflake",
    "user_payload",
]

#: Discord's epoch (2015-01-01) in Unix milliseconds; snowflakes carry time since it.
DISCORD_EPOCH_MS = 1_420_070_400_000
_last_id = 0
GUILD_ID = 1_000_000_000_000_000_001
CHANNEL_ID = 1_000_000_000_000_000_002
APP_ID = 1_000_000_000_000_000_003
BOT_ID = APP_ID
#: The application's bot token: REST wants ``Authorization: Bot <it>``, IDENTIFY carries it.
BOT_TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMw.fake.bot-token-never-printed"
GUILD_B_ID = 1_000_000_000_000_000_011

# Permission bits (Discord's numbering).
ADD_REACTIONS = 1 << 6
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
#: What a member (and, by default, the bot) may do in a text channel.
BASIC = (
    VIEW_CHANNEL | SEND_MESSAGES | ADD_REACTIONS | ATTACH_FILES | EMBED_LINKS | READ_MESSAGE_HISTORY
)
ALL_TEXT = BASIC | MANAGE_MESSAGES

#: Discord's JSON error bodies, by name: (HTTP status, code, message).
ERRORS: dict[str, tuple[int, int, str]] = {
    "unknown_channel": (404, 10003, "Unknown Channel"),
    "unknown_message": (404, 10008, "Unknown Message"),
    "unknown_interaction": (404, 10062, "Unknown interaction"),
    "unknown_webhook": (404, 10015, "Unknown Webhook"),
    "unknown_guild": (404, 10004, "Unknown Guild"),
    "unknown_member": (404, 10007, "Unknown Member"),
    "missing_access": (403, 50001, "Missing Access"),
    "missing_permissions": (403, 50013, "Missing Permissions"),
    "invalid_webhook_token": (401, 50027, "Invalid Webhook Token"),
    "unauthorized": (401, 0, "401: Unauthorized"),
    "not_found": (404, 0, "404: Not Found"),
    "method_not_allowed": (405, 0, "405: Method Not Allowed"),
    "unknown_emoji": (400, 10014, "Unknown Emoji"),
    "max_reactions": (400, 30010, "Maximum number of reactions reached (20)"),
    "empty_message": (400, 50006, "Cannot send an empty message"),
    "already_acknowledged": (400, 40060, "Interaction has already been acknowledged."),
    "too_large": (413, 40005, "Request entity too large"),
}


def snowflake() -> str:
    """A new id in Discord's layout: milliseconds since its epoch in the top 42 bits, so
    ``after=``/``before=`` a time works as in Discord; strictly increasing."""
    global _last_id
    now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
    _last_id = max(now, _last_id + 1)
    return str(_last_id)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Member:
    """A community member; ``permissions`` apply in every guild unless the server is told
    otherwise for one (:meth:`FakeDiscord.set_member_permissions`); ``roles`` are role names."""

    id: int
    name: str
    permissions: int = BASIC
    roles: list[str] = field(default_factory=list)

    def user(self) -> dict[str, Any]:
        return user_payload(self.id, self.name, global_name=self.name)

    def member(
        self, *, permissions: int | None = None, role_ids: Sequence[int] = ()
    ) -> dict[str, Any]:
        return {
            **member_fields(self.user(), role_ids),
            "permissions": str(self.permissions if permissions is None else permissions),
        }


def user_payload(
    user_id: int, name: str, *, global_name: str | None = None, bot: bool = False
) -> dict[str, Any]:
    """A user object with the fields Discord always sends."""
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "primary_guild": None,
        **({"bot": True} if bot else {}),
    }


def member_fields(user: dict[str, Any], role_ids: Sequence[int] = ()) -> dict[str, Any]:
    """A guild member object (without ``permissions``, which only interactions carry)."""
    return {
        "user": user,
        "roles": [str(r) for r in role_ids],
        "joined_at": "2024-01-01T00:00:00+00:00",
        "nick": None,
        "avatar": None,
        "banner": None,
        "premium_since": None,
        "communication_disabled_until": None,
        "pending": False,
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


BOT_USER = user_payload(BOT_ID, "dreamrate", bot=True)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Discord sends exactly "application/json" (discord.py compares the header verbatim).
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def error_response(name: str, headers: dict[str, str] | None = None) -> web.Response:
    """One of :data:`ERRORS` as Discord answers it."""
    status, code, message = ERRORS[name]
    return json_response({"message": message, "code": code}, status=status, headers=headers)


def invalid_form_body(errors: dict[str, Any]) -> web.Response:
    """Discord's 400 for a body outside its limits, with the field-by-field ``errors``."""
    return json_response(
        {"message": "Invalid Form Body", "code": 50035, "errors": errors}, status=400
    )


def match_route(pattern: str, path: str) -> tuple[str, ...] | None:
    """The values of a route template's ``{parameters}`` in ``path``, or None."""
    want, have = pattern.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(have):
        return None
    captured = []
    for w, h in zip(want, have, strict=True):
        if w.startswith("{"):
            captured.append(h)
        elif w != h:
            return None
    return tuple(captured)
