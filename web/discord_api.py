"""What the web home asks Discord: the OAuth2 code exchange, who a member is and which guilds
they share with the bot, and (with the bot token) deleting a removed image's messages.

Plain HTTP with aiohttp (discord.py stays the bot's): the calls are four and their payloads
small. Tokens are sent in headers and forms only, never logged or put in errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from dreamrate.core.errors import DreamrateError

__all__ = [
    "DISCORD_API",
    "DiscordAPI",
    "DiscordLoginError",
    "MemberGuild",
]

logger = logging.getLogger(__name__)

DISCORD_API = "https://discord.com/api/v10"


class DiscordLoginError(DreamrateError):
    """Discord refused the login (a bad or used code, a revoked token, Discord down)."""


@dataclass(frozen=True, slots=True)
class MemberGuild:
    """One of the member's guilds as OAuth2 shows it: what makes them a moderator there
    is :func:`dreamrate.community.members.is_moderator`'s to say."""

    id: int
    name: str
    #: The member's permission bits there.
    permissions: int
    #: Whether the member owns it.
    owner: bool


class DiscordAPI:
    """Discord's REST API at ``api_base`` (a Discord-compatible server in tests)."""

    def __init__(self, api_base: str | None, bot_token: str | None) -> None:
        self.api_base = (api_base or DISCORD_API).rstrip("/")
        self._bot_token = bot_token
        self._session: aiohttp.ClientSession | None = None

    @property
    def authorize_url(self) -> str:
        """Where members approve the login: the site's ``/oauth2/authorize``."""
        origin = self.api_base.rsplit("/api", 1)[0]
        return f"{origin}/oauth2/authorize"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self._http().request(method, self.api_base + path, **kwargs) as response:
                body = await response.json(content_type=None)
                if response.status >= 400:
                    what = (
                        body.get("error") or body.get("message") if isinstance(body, dict) else ""
                    )
                    raise DiscordLoginError(f"Discord answered {response.status} ({what})")
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DiscordLoginError(f"cannot reach Discord ({type(exc).__name__})") from exc

    def _bot_headers(self) -> dict[str, str]:
        if not self._bot_token:
            raise DiscordLoginError("no bot token: set DREAMRATE_DISCORD_TOKEN")
        return {"Authorization": f"Bot {self._bot_token}"}

    async def application_id(self) -> int:
        """The application's id (its OAuth2 client id), read with the bot token."""
        body = await self._json("GET", "/oauth2/applications/@me", headers=self._bot_headers())
        return int(body["id"])

    async def exchange_code(
        self, *, code: str, redirect_uri: str, client_id: int, client_secret: str
    ) -> str:
        """The access token for an authorization ``code`` (usable once)."""
        body = await self._json(
            "POST",
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": str(client_id),
                "client_secret": client_secret,
            },
        )
        return str(body["access_token"])

    async def member(self, access_token: str) -> tuple[int, str]:
        """``(Discord id, display name)`` of the member the token belongs to."""
        body = await self._json(
            "GET", "/users/@me", headers={"Authorization": f"Bearer {access_token}"}
        )
        return int(body["id"]), str(body.get("global_name") or body.get("username") or "")

    async def member_guilds(self, access_token: str) -> list[MemberGuild]:
        """The member's guilds, with their permissions there."""
        body = await self._json(
            "GET", "/users/@me/guilds", headers={"Authorization": f"Bearer {access_token}"}
        )
        return [
            MemberGuild(
                int(g["id"]),
                str(g.get("name", "")),
                int(g.get("permissions") or 0),
                bool(g.get("owner")),
            )
            for g in body
        ]

    async def bot_guild_ids(self) -> set[int]:
        """The guilds the bot is in (Discord pages them 200 at a time)."""
        found: set[int] = set()
        after = "0"
        while True:
            body = await self._json(
                "GET",
                "/users/@me/guilds",
                params={"limit": "200", "after": after},
                headers=self._bot_headers(),
            )
            page = [int(g["id"]) for g in body]
            if not page or set(page) <= found:
                return found
            found.update(page)
            if len(page) < 200:
                return found
            after = str(max(page))

    async def member_roles(self, guild_id: int, member_id: int) -> list[str]:
        """The names of the roles the member holds in the guild (bot token); none when
        they are not in it."""
        try:
            member = await self._json(
                "GET", f"/guilds/{guild_id}/members/{member_id}", headers=self._bot_headers()
            )
        except DiscordLoginError as exc:
            if "404" in str(exc):
                return []
            raise
        held = {str(r) for r in member.get("roles", [])}
        if not held:
            return []
        roles = await self._json("GET", f"/guilds/{guild_id}/roles", headers=self._bot_headers())
        return [str(r.get("name")) for r in roles if str(r["id"]) in held]

    async def channel_guild(self, channel_id: int) -> int | None:
        """The guild of a text channel the bot can see, None when it is no such channel."""
        try:
            body = await self._json("GET", f"/channels/{channel_id}", headers=self._bot_headers())
        except DiscordLoginError as exc:
            if "404" in str(exc) or "403" in str(exc):
                return None
            raise
        if body.get("type") not in (0, 5):  # a text or an announcement channel
            return None
        return int(body["guild_id"]) if body.get("guild_id") else None

    async def delete_message(self, channel_id: int, message_id: int) -> bool:
        """Delete one message with the bot token; False when Discord would not (logged)."""
        try:
            async with self._http().delete(
                f"{self.api_base}/channels/{channel_id}/messages/{message_id}",
                headers=self._bot_headers(),
            ) as response:
                if response.status in (200, 204, 404):
                    return True
                logger.warning(
                    "could not delete message %s in channel %s: HTTP %s",
                    message_id,
                    channel_id,
                    response.status,
                )
                return False
        except (aiohttp.ClientError, TimeoutError, DiscordLoginError) as exc:
            logger.warning("could not delete message %s: %s", message_id, type(exc).__name__)
            return False
