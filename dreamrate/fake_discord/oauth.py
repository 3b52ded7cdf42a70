"""Discord's OAuth2 authorization-code flow, as the local server plays it.

Like Discord: the application has one client id (the bot's application id) and a secret,
redirect URIs must be registered exactly, a code is used once and expires in 10 minutes,
and the access token answers ``users/@me`` and ``users/@me/guilds`` for the scopes it was
granted (``identify``, ``guilds``). The authorize page lists the members who may log in,
each with an "Authorize" button, so a browser test logs in by clicking as a person would.
Error bodies are Discord's: ``{"error": "invalid_grant", ...}`` from the token endpoint,
``401: Unauthorized`` for a bad bearer token.
"""

from __future__ import annotations

import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from dreamrate.fake_discord.payloads import APP_ID, Member, json_response
from dreamrate.fake_discord.world import Guild

__all__ = ["OAuthAccount", "OAuthServer"]

CODE_SECONDS = 600
TOKEN_SECONDS = 7 * 24 * 3600


@dataclass
class OAuthAccount:
    """A member who can log in, and the guilds they are in."""

    member: Member
    guild_ids: list[int]


@dataclass
class _Grant:
    user_id: int
    scopes: frozenset[str]
    redirect_uri: str
    expires: float


@dataclass
class OAuthServer:
    """The OAuth2 side of :class:`~dreamrate.fake_discord.server.FakeDiscord`."""

    guilds: dict[int, Guild]
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    redirect_uris: set[str] = field(default_factory=set)
    accounts: dict[int, OAuthAccount] = field(default_factory=dict)
    _codes: dict[str, _Grant] = field(default_factory=dict)
    _tokens: dict[str, _Grant] = field(default_factory=dict)
    #: Token requests answered, by outcome ("ok", "invalid_grant", ...), for tests.
    token_requests: list[str] = field(default_factory=list)

    def add_account(self, member: Member, guild_ids: list[int]) -> None:
        self.accounts[member.id] = OAuthAccount(member, list(guild_ids))

    # -- /oauth2/authorize ----------------------------------------------------------------

    def _check_request(self, query: Any) -> str | None:
        if query.get("response_type") != "code":
            return "Unsupported response_type"
        if query.get("client_id") != str(APP_ID):
            return "Unknown Application"
        if query.get("redirect_uri") not in self.redirect_uris:
            return "Invalid OAuth2 redirect_uri"
        scopes = set(query.get("scope", "").split())
        if not scopes or not scopes <= {"identify", "guilds", "email"}:
            return "Invalid scope"
        return None

    async def authorize_page(self, request: web.Request) -> web.Response:
        problem = self._check_request(request.query)
        if problem is not None:
            return web.Response(text=problem, status=400)
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in request.query.items()
        )
        buttons = "".join(
            f'<form method="post">{hidden}<input type="hidden" name="login" value="{a.member.id}">'
            f'<button type="submit" data-user="{a.member.id}">Authorize as '
            f"{html.escape(a.member.name)}</button></form>"
            for a in self.accounts.values()
        )
        cancel = f'<form method="post">{hidden}<button name="deny" value="1">Cancel</button></form>'
        page = (
            "<!doctype html><title>Discord: authorize</title>"
            f"<h1>An application wants to access your account</h1>"
            f"<p>Scopes: {html.escape(request.query.get('scope', ''))}</p>{buttons}{cancel}"
        )
        return web.Response(text=page, content_type="text/html")

    async def authorize(self, request: web.Request) -> web.Response:
        form = await request.post()
        problem = self._check_request(form)
        if problem is not None:
            return web.Response(text=problem, status=400)
        redirect = str(form["redirect_uri"])
        state = {"state": str(form["state"])} if form.get("state") else {}
        if form.get("deny"):
            query = urlencode({"error": "access_denied", **state})
            raise web.HTTPFound(f"{redirect}?{query}")
        account = self.accounts.get(int(str(form.get("login", "0")) or 0))
        if account is None:
            return web.Response(text="Unknown account", status=400)
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Grant(
            account.member.id,
            frozenset(str(form["scope"]).split()),
            redirect,
            time.monotonic() + CODE_SECONDS,
        )
        raise web.HTTPFound(f"{redirect}?{urlencode({'code': code, **state})}")

    # -- /api/v10/oauth2/token ------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()

        def refuse(error: str, description: str, status: int = 400) -> web.Response:
            self.token_requests.append(error)
            return json_response({"error": error, "error_description": description}, status)

        if form.get("client_id") != str(APP_ID) or form.get("client_secret") != self.client_secret:
            return refuse("invalid_client", "Invalid client", 401)
        if form.get("grant_type") != "authorization_code":
            return refuse("unsupported_grant_type", 'Unsupported grant type "grant_type"')
        grant = self._codes.pop(str(form.get("code", "")), None)  # a code works once
        if grant is None or grant.expires < time.monotonic():
            return refuse("invalid_grant", 'Invalid "code" in request.')
        if form.get("redirect_uri") != grant.redirect_uri:
            return refuse("invalid_grant", 'Invalid "redirect_uri" in request.')
        access = secrets.token_urlsafe(30)
        self._tokens[access] = _Grant(
            grant.user_id, grant.scopes, grant.redirect_uri, time.monotonic() + TOKEN_SECONDS
        )
        self.token_requests.append("ok")
        return json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": TOKEN_SECONDS,
                "refresh_token": secrets.token_urlsafe(30),
                "scope": " ".join(sorted(grant.scopes)),
            }
        )

    # -- bearer-token REST ----------------------------------------------------------------

    def grant_of(self, request: web.Request) -> _Grant | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        grant = self._tokens.get(header.removeprefix("Bearer "))
        if grant is None or grant.expires < time.monotonic():
            return None
        return grant

    @staticmethod
    def unauthorized() -> web.Response:
        return json_response({"message": "401: Unauthorized", "code": 0}, 401)

    def me(self, grant: _Grant) -> web.Response:
        if "identify" not in grant.scopes:
            return self.unauthorized()
        user = self.accounts[grant.user_id].member.user()
        # users/@me answers the private fields too (email only with the email scope).
        private = {"mfa_enabled": False, "locale": "en-US", "premium_type": 0}
        if "email" in grant.scopes:
            private |= {"email": f"{user['username']}@example.invalid", "verified": True}
        return json_response({**user, **private})

    def my_guilds(self, grant: _Grant) -> web.Response:
        if "guilds" not in grant.scopes:
            return json_response({"message": "Missing Access", "code": 50001}, 403)
        account = self.accounts[grant.user_id]
        member = account.member
        return json_response(
            [
                {
                    "id": str(guild.id),
                    "name": guild.name,
                    "icon": None,
                    "banner": None,
                    "owner": False,
                    "permissions": str(guild.member_permissions.get(member.id, member.permissions)),
                    "features": [],
                }
                for gid in account.guild_ids
                if (guild := self.guilds.get(gid)) is not None
            ]
        )
