"""Login with Discord: the OAuth2 authorization-code flow (scopes ``identify guilds``).

``/login`` sends the member to Discord with a fresh ``state`` kept in their session;
``/callback`` accepts only that state, trades the code for a token, asks who the member is
and which guilds they are in, keeps the guilds they share with the bot, and starts a new
session. The access token is used for those two reads and then dropped: nothing of it is
stored, logged or put in the cookie. The session itself is kept in the database
(:mod:`.sessions`), so logging out ends it in every web process.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dreamrate.community.members import is_moderator
from dreamrate.core.errors import ConfigError
from dreamrate.web.bodies import read_form
from dreamrate.web.context import ctx
from dreamrate.web.discord_api import DiscordLoginError
from dreamrate.web.security import csrf_ok, start_session
from dreamrate.web.sessions import banned_everywhere, end_session, record_login

__all__ = ["callback", "login", "logout"]

logger = logging.getLogger(__name__)

SCOPES = "identify guilds"


async def _client_id(request: Request) -> int:
    context = ctx(request)
    if context.client_id is None:
        context.client_id = context.settings.web.client_id or await context.discord.application_id()
    return context.client_id


async def login(request: Request) -> Response:
    context = ctx(request)
    if context.settings.web.client_secret is None:
        raise ConfigError("set DREAMRATE_WEB_CLIENT_SECRET to the Discord application's secret")
    try:
        client_id = await _client_id(request)
    except DiscordLoginError as exc:
        return context.render(request, "error.html", {"message": str(exc)}, 502)
    state = secrets.token_urlsafe(24)
    request.session["oauth_state"] = state
    query = urlencode(
        {
            "response_type": "code",
            "client_id": str(client_id),
            "scope": SCOPES,
            "state": state,
            "redirect_uri": context.redirect_uri,
            "prompt": "none",
        }
    )
    return RedirectResponse(f"{context.discord.authorize_url}?{query}", status_code=302)


async def callback(request: Request) -> Response:
    context = ctx(request)
    expected = request.session.pop("oauth_state", None)
    state = request.query_params.get("state", "")
    if not expected or not hmac.compare_digest(str(expected).encode(), state.encode()):
        return context.render(
            request,
            "error.html",
            {"message": "Login refused: this link does not belong to a login started here."},
            400,
        )
    if "error" in request.query_params or not request.query_params.get("code"):
        return context.render(request, "error.html", {"message": "Login cancelled."}, 400)
    secret = context.settings.web.client_secret
    assert secret is not None  # /login refuses to start without it
    try:
        token = await context.discord.exchange_code(
            code=request.query_params["code"],
            redirect_uri=context.redirect_uri,
            client_id=await _client_id(request),
            client_secret=secret.get_secret_value(),
        )
        discord_id, name = await context.discord.member(token)
        guilds = await context.discord.member_guilds(token)
        with_bot = await context.discord.bot_guild_ids()
        # /admin's rule: the owner, Manage Server or Administrator, or the moderator role
        # named in the settings (asked of Discord only where the bits do not settle it).
        role = context.settings.discord.moderator_role
        shared: dict[int, tuple[str, bool]] = {}
        for g in guilds:
            if g.id not in with_bot:
                continue
            by_bits = is_moderator(permissions=g.permissions, owner=g.owner)
            roles = (
                await context.discord.member_roles(g.id, discord_id) if role and not by_bits else []
            )
            shared[g.id] = (
                g.name,
                is_moderator(
                    permissions=g.permissions, owner=g.owner, roles=roles, moderator_role=role
                ),
            )
    except DiscordLoginError as exc:
        logger.warning("web login failed: %s", exc)
        return context.render(request, "error.html", {"message": f"Login failed: {exc}"}, 502)
    if await banned_everywhere(context.engine, discord_id):
        return context.render(request, "error.html", {"message": "You are banned here."}, 403)
    sid, at = start_session(request, discord_id, name, shared)
    await record_login(
        context.engine,
        sid,
        discord_id,
        datetime.fromtimestamp(at, UTC),
        timedelta(hours=context.settings.web.session_hours),
    )
    logger.info("web login: member %s (%d shared guild(s))", discord_id, len(shared))
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    context = ctx(request)
    member = context.maybe_member(request)
    if member is not None:  # nobody logged in: nothing to read, nothing to end
        form = await read_form(request)
        if not csrf_ok(member, str(form.get("csrf", ""))):
            return context.render(
                request, "error.html", {"message": "Refused: bad form token."}, 403
            )
        await end_session(context.engine, member.sid)
    request.session.clear()
    return RedirectResponse("/", status_code=303)
