"""A Discord-compatible server (REST + gateway) for end-to-end tests and `dreamrate demo`.

This is a test double, not a Discord client: an unmodified discord.py client talks to it
over HTTP and a websocket when ``discord.http.Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY`` point here (dreamrate sets them from
``DREAMRATE_DISCORD_API_BASE`` / ``..._GATEWAY_URL``). It answers as Discord's published
OpenAPI description and reference say, where a bot meets Discord's edges: the bot's token on
every request, several guilds with their own channels, roles, custom emoji and commands, DMs,
per-channel permissions with Discord's 403/404 bodies, the documented limits on message
bodies, commands and uploads (400/413 with Discord's codes), rate-limit buckets with their
headers and 429s, the 3 s acknowledgement deadline, the 15-minute interaction token and the
deferred response that the first follow-up completes. Its rooms: the gateway
(:mod:`~dreamrate.fake_discord.gateway`), messages and reactions
(:mod:`~dreamrate.fake_discord.messages`), interaction responses
(:mod:`~dreamrate.fake_discord.interactions`), and what tests do as members (slash commands,
buttons, reactions; :mod:`~dreamrate.fake_discord.driving`). Every answer can be written down for the suite to
check against the spec (:mod:`~dreamrate.fake_discord.traffic`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dreamrate.fake_discord import traffic
from dreamrate.fake_discord.driving import Driving, Interaction
from dreamrate.fake_discord.emoji import ReactionEmoji
from dreamrate.fake_discord.gateway import Gateway
from dreamrate.fake_discord.interactions import Interactions
from dreamrate.fake_discord.limits import (
    command_errors,
    upload_limit,
)
from dreamrate.fake_discord.messages import Messages
from dreamrate.fake_discord.oauth import OAuthServer
from dreamrate.fake_discord.payloads import (
    APP_ID,
    BASIC,
    BOT_TOKEN,
    BOT_USER,
    Member,
    error_response,
    invalid_form_body,
    json_response,
    match_route,
    member_fields,
    snowflake,
    user_payload,
)
from dreamrate.fake_discord.ratelimits import RateLimiter, bucket_for
from dreamrate.fake_discord.world import Channel, Guild, default_world

__all__ = ["FakeDiscord"]

#: Statuses Discord counts as invalid requests (an IP is banned past 10,000 in 10 minutes).
INVALID_STATUSES = (401, 403, 429)
#: Routes that authenticate by the token in their path (or a form), not the bot's token.
_NO_BOT_TOKEN = ("/interactions/", "/webhooks/", "/oauth2/token")
#: Routes a member's OAuth2 bearer token may call.
_BEARER = ("/users/@me", "/users/@me/guilds")

Handler = Callable[..., Any]


class FakeDiscord(Messages, Interactions, Driving):
    """The server; ``await start()``, then point the bot at ``api_base`` / ``gateway_url``.

    Parameters
    ----------
    rate_limits
        Enforce Discord's buckets (429s past them). On by default, as on Discord.
    guilds
        The world; default :func:`~dreamrate.fake_discord.world.default_world` (two guilds).
    ack_deadline
        Seconds an interaction may wait for its first response (Discord: 3).
    token_lifetime
        Seconds an interaction token accepts follow-ups and edits (Discord: 15 minutes).
    bot_token
        The application's bot token (REST and IDENTIFY must carry it); default
        :data:`~dreamrate.fake_discord.payloads.BOT_TOKEN`.
    heartbeat_interval
        Seconds between heartbeats the gateway asks for (Discord: 41.25).
    privileged_intents
        Privileged intents the application has enabled (default none, as a new app).
    """

    def __init__(
        self,
        *,
        rate_limits: bool = True,
        guilds: dict[int, Guild] | None = None,
        ack_deadline: float = 3.0,
        token_lifetime: float = 15 * 60,
        bot_token: str = BOT_TOKEN,
        heartbeat_interval: float = 41.25,
        privileged_intents: int = 0,
    ) -> None:
        self.guilds = guilds if guilds is not None else default_world()
        self.dms: dict[int, Channel] = {}  # member id -> their DM channel with the bot
        self.messages: dict[int, dict[str, Any]] = {}
        #: Message -> emoji key (the emoji, or ``name:id`` of a custom one) -> user ids.
        self.reactions: dict[int, dict[str, list[int]]] = {}
        self.files: dict[int, list[bytes]] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.callbacks: dict[str, list[dict[str, Any]]] = {}  # interaction id -> responses
        self.originals: dict[str, dict[str, Any]] = {}  # token -> the original response
        self.edits: dict[str, list[dict[str, Any]]] = {}  # token -> each edit of the original
        self.followups: dict[str, list[int]] = {}  # token -> message ids
        #: Seconds from dispatching each interaction to its first response, by interaction id.
        self.ack_latencies: dict[str, float] = {}
        #: Every REST answer by HTTP status (429s and 403s included).
        self.statuses: Counter[int] = Counter()
        self.limiter = RateLimiter(enabled=rate_limits)
        #: Discord login for the web home (OAuth2 authorization-code flow).
        self.oauth = OAuthServer(self.guilds)
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.bot_token = bot_token
        self._tokens = {bot_token}
        self.bot_user = BOT_USER
        self.gateway = Gateway(
            self, heartbeat_interval=heartbeat_interval, privileged_intents=privileged_intents
        )
        self.identifies = 0
        self.resumes = 0
        #: Reaction events delivered to the bot since its last IDENTIFY (a new session).
        self.session_reactions = 0
        self._interactions: dict[str, Interaction] = {}  # by token
        self._member_names: dict[int, str] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/oauth2/authorize", self.oauth.authorize_page)
        app.router.add_post("/oauth2/authorize", self.oauth.authorize)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        session = self.gateway.session
        if session is not None and session.ws is not None:
            await session.ws.close()  # 1000: the session ends with the server
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def connected(self) -> bool:
        """Whether a bot holds a live, ready gateway session (events reach it)."""
        return self.gateway.connected

    async def wait_connected(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self.gateway.ready.wait(), timeout)

    async def wait_disconnected(self, timeout: float = 30) -> None:
        """Until the bot's gateway socket is closed (events now wait for its RESUME)."""
        await self.wait_for(lambda: not self.connected, timeout)

    async def drop_connection(self, *, resumable: bool = True) -> None:
        """Close the gateway socket as a network failure would. The bot RESUMEs and gets the
        events it missed; with ``resumable=False`` the session has expired, so it identifies
        anew and what happened meanwhile is lost (backfill must find it)."""
        await self.gateway.drop(resumable=resumable)

    async def request_reconnect(self) -> None:
        """Send the bot op 7 RECONNECT, as Discord does before moving a session."""
        await self.gateway.request_reconnect()

    def token_ok(self, token: object) -> bool:
        return isinstance(token, str) and token in self._tokens

    # -- what it cost ---------------------------------------------------------------------

    @property
    def rate_limited(self) -> int:
        """429 answers so far."""
        return self.statuses[429]

    @property
    def invalid_requests(self) -> int:
        """401, 403 and 429 answers so far (Discord bans an IP past 10,000 in 10 minutes)."""
        return sum(self.statuses[s] for s in INVALID_STATUSES)

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Every command the bot registered (globally, then per guild)."""
        return [*self.global_commands, *(c for cs in self.guild_commands.values() for c in cs)]

    # -- the world ------------------------------------------------------------------------

    def channel(self, channel_id: int) -> Channel | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return next((c for c in self.dms.values() if c.id == channel_id), None)

    def channels_of(self, guild_id: int) -> list[int]:
        return [c.id for c in self.guilds[guild_id].channels.values() if not c.deleted]

    def set_bot_permissions(self, channel_id: int, permissions: int) -> None:
        """Change what the bot may do in a channel (takes effect at once, as on Discord)."""
        channel = self.channel(channel_id)
        assert channel is not None, f"no channel {channel_id}"
        channel.bot_permissions = permissions

    def set_member_permissions(self, guild_id: int, member: Member, permissions: int) -> None:
        self.guilds[guild_id].member_permissions[member.id] = permissions

    async def delete_channel(self, channel_id: int) -> None:
        channel = self.channel(channel_id)
        assert channel is not None and channel.guild_id is not None
        channel.deleted = True
        await self.dispatch("CHANNEL_DELETE", channel.payload())

    def custom_emoji(self) -> dict[int, ReactionEmoji]:
        """Every custom emoji of the guilds the bot is in, by id (a bot may use them all)."""
        return {
            emoji_id: ReactionEmoji(name, emoji_id)
            for guild in self.guilds.values()
            for emoji_id, name in guild.emojis.items()
        }

    def _member_payload(self, member: Member, guild: Guild) -> dict[str, Any]:
        return member.member(
            permissions=guild.member_permissions.get(member.id, member.permissions),
            role_ids=guild.role_ids(member.roles),
        )

    def members_of(self, guild_id: int) -> list[dict[str, Any]]:
        """The members of a guild the server knows (who interacted, who can log in; the bot)."""
        guild = self.guilds.get(guild_id)
        if guild is None:
            return []
        known = {uid: Member(uid, name) for uid, name in self._member_names.items()}
        known |= {
            a.member.id: a.member for a in self.oauth.accounts.values() if guild_id in a.guild_ids
        }
        members = [member_fields(BOT_USER)]
        members += [member_fields(m.user(), guild.role_ids(m.roles)) for m in known.values()]
        return members

    def upload_limit(self, channel_id: int) -> int:
        """The largest attachment Discord takes in a channel (by its guild's boost tier)."""
        channel = self.channel(channel_id)
        guild = self.guilds.get(channel.guild_id or 0) if channel is not None else None
        return upload_limit(guild.premium_tier if guild is not None else 0)

    # -- gateway --------------------------------------------------------------------------

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event to the bot (if its intents ask for it)."""
        await self.gateway.dispatch(event, data)

    def delivered(self, event: str) -> None:
        """Count what reached the bot (the gateway calls this for each event it sent)."""
        if event.startswith("MESSAGE_REACTION_"):
            self.session_reactions += 1

    def ready_payload(self, session_id: str) -> dict[str, Any]:
        return {
            "v": 10,
            "user": BOT_USER,
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [],
        }

    def guild_payloads(self) -> list[dict[str, Any]]:
        return [guild.payload() for guild in self.guilds.values()]

    # -- REST -----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        known_path = False
        for (verb, pattern), handler in self._routes():
            args = match_route(pattern, path)
            if args is None:
                continue
            known_path = True
            if verb != method:
                continue
            refused = self._unauthorized(request, pattern)
            if refused is not None:
                return self._answer(method, pattern, path, refused)
            headers: dict[str, str] = {}
            if not pattern.startswith("/interactions/"):  # callbacks are not rate limited
                decision = self.limiter.check(*bucket_for(method, pattern, args))
                headers = decision.headers
                if decision.retry_after:
                    limited = self._too_many(decision.retry_after, decision.is_global, headers)
                    return self._answer(method, pattern, path, limited)
            response = await handler(request, *args)
            response.headers.update(headers)
            return self._answer(method, pattern, path, response)
        missing = "method_not_allowed" if known_path else "not_found"
        return self._answer(method, None, path, error_response(missing))

    def _unauthorized(self, request: web.Request, pattern: str) -> web.Response | None:
        """Discord's 401 unless the request carries the bot's token (or, where a member may
        call, a live bearer token; routes with a token in the path need none)."""
        if pattern.startswith(_NO_BOT_TOKEN):
            return None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and pattern in _BEARER:
            return None  # the handler checks the grant and its scopes
        if header.startswith("Bot ") and self.token_ok(header.removeprefix("Bot ")):
            return None
        return error_response("unauthorized")

    def _answer(
        self, method: str, route: str | None, path: str, response: web.Response
    ) -> web.Response:
        self.statuses[response.status] += 1
        body = response.body if isinstance(response.body, bytes) else None
        traffic.record(method, route or "(no route)", path, response.status, body or None)
        return response

    @staticmethod
    def _too_many(retry_after: float, is_global: bool, headers: dict[str, str]) -> web.Response:
        extra = {
            **headers,
            "Retry-After": f"{retry_after:.3f}",
            "X-RateLimit-Scope": "global" if is_global else "user",
            "Via": "1.1 google",  # discord.py takes a 429 without it for a Cloudflare ban
        }
        if is_global:
            extra["X-RateLimit-Global"] = "true"
        return json_response(
            {
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": is_global,
                "code": 0,
            },
            status=429,
            headers=extra,
        )

    def _routes(self) -> list[tuple[tuple[str, str], Handler]]:
        """Discord's route templates (as its spec names them) and their handlers."""
        msg = "/channels/{channel_id}/messages/{message_id}"
        hook = "/webhooks/{webhook_id}/{webhook_token}"
        return [
            (("GET", "/users/@me"), self._me),
            (("GET", "/users/@me/guilds"), self._my_guilds),
            (("POST", "/oauth2/token"), self._token),
            (("GET", "/oauth2/applications/@me"), self._app),
            (("GET", "/applications/@me"), self._app),
            (("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"), self._put_guild_commands),
            (("PUT", "/applications/{application_id}/commands"), self._put_global_commands),
            (("GET", "/applications/{application_id}/guilds/{guild_id}/commands"), self._get_guild_commands),
            (("GET", "/applications/{application_id}/commands"), self._get_global_commands),
            (("POST", "/interactions/{interaction_id}/{interaction_token}/callback"), self._callback),
            (("PATCH", f"{hook}/messages/@original"), self._edit_original),
            (("GET", f"{hook}/messages/@original"), self._get_original),
            (("DELETE", f"{hook}/messages/@original"), self._delete_original),
            (("POST", hook), self._followup),
            (("POST", "/users/@me/channels"), self._open_dm),
            (("POST", "/channels/{channel_id}/messages"), self._post_message),
            (("GET", "/channels/{channel_id}/messages"), self._history),
            (("GET", msg), self._get_message),
            (("PATCH", msg), self._edit_message),
            (("DELETE", msg), self._delete_message),
            (("PUT", f"{msg}/reactions/{{emoji_name}}/@me"), self._bot_react),
            (("DELETE", f"{msg}/reactions/{{emoji_name}}/@me"), self._bot_unreact),
            (("GET", f"{msg}/reactions/{{emoji_name}}"), self._reaction_users),
            (("DELETE", f"{msg}/reactions/{{emoji_name}}"), self._clear_emoji),
            (("DELETE", f"{msg}/reactions"), self._clear_reactions),
            (("GET", "/channels/{channel_id}"), self._get_channel),
            (("GET", "/guilds/{guild_id}/members/{user_id}"), self._guild_member),
            (("GET", "/guilds/{guild_id}/roles"), self._guild_roles),
        ]  # fmt: skip

    # -- users, applications, commands ----------------------------------------------------

    async def _me(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").startswith("Bearer "):
            grant = self.oauth.grant_of(request)
            return self.oauth.unauthorized() if grant is None else self.oauth.me(grant)
        return json_response(
            {**BOT_USER, "mfa_enabled": False, "locale": "en-US", "verified": True}
        )

    async def _my_guilds(self, request: web.Request) -> web.Response:
        """The guilds of the member a bearer token belongs to, or the bot's own."""
        if request.headers.get("Authorization", "").startswith("Bearer "):
            grant = self.oauth.grant_of(request)
            return self.oauth.unauthorized() if grant is None else self.oauth.my_guilds(grant)
        return json_response(
            [
                {"id": str(g.id), "name": g.name, "icon": None, "banner": None, "owner": False,
                 "permissions": str(BASIC), "features": []}
                for g in self.guilds.values()
            ]
        )  # fmt: skip

    async def _guild_member(
        self, request: web.Request, guild_id: str, user_id: str
    ) -> web.Response:
        """A member of a guild with their role ids (the members who can log in are known)."""
        guild = self.guilds.get(int(guild_id))
        if guild is None:
            return error_response("unknown_guild")
        account = self.oauth.accounts.get(int(user_id))
        if account is None or guild.id not in account.guild_ids:
            return error_response("unknown_member")
        member = account.member
        return json_response(member_fields(member.user(), guild.role_ids(member.roles)))

    async def _guild_roles(self, request: web.Request, guild_id: str) -> web.Response:
        guild = self.guilds.get(int(guild_id))
        if guild is None:
            return error_response("unknown_guild")
        return json_response(guild.payload()["roles"])

    async def _token(self, request: web.Request) -> web.Response:
        return await self.oauth.token(request)

    async def _app(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "id": str(APP_ID),
                "name": "dreamrate",
                "description": "",
                "icon": None,
                "type": None,
                "bot": BOT_USER,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user_payload(1, "owner"),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "flags_new": "0",
                "summary": "",
                "rpc_origins": [],
                "redirect_uris": sorted(self.oauth.redirect_uris),
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "approximate_guild_count": len(self.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "event_webhooks_url": None,
                "event_webhooks_status": 1,
                "event_webhooks_types": [],
                "integration_types_config": {},
                "tags": [],
                "eligible_oauth2_scopes": [
                    "identify",
                    "guilds",
                    "email",
                    "bot",
                    "applications.commands",
                ],
            }
        )

    def _registered(self, body: list[dict[str, Any]], guild: int | None) -> list[dict[str, Any]]:
        registered = []
        for c in body:
            chat_input = c.get("type", 1) in (1, None)
            command = {
                **c,
                "id": snowflake(),
                "application_id": str(APP_ID),
                "version": snowflake(),
                "type": c.get("type") or 1,
                "description": c.get("description") or "",
                "default_member_permissions": c.get("default_member_permissions"),
                "options": [_option_response(o) for o in c.get("options") or []],
                "nsfw": bool(c.get("nsfw")),
            }
            if not chat_input:
                command.pop("options")
            if guild is not None:
                command["guild_id"] = str(guild)
            registered.append(
                {
                    k: v
                    for k, v in command.items()
                    if v is not None or k == "default_member_permissions"
                }
            )
        return registered

    async def _put_commands(
        self, request: web.Request, guild: int | None
    ) -> web.Response | list[dict[str, Any]]:
        try:
            body = await request.json()
        except ValueError:
            return invalid_form_body(
                {"_errors": [{"code": "BASE_TYPE_ARRAY", "message": "Must be an array."}]}
            )
        errors = command_errors(body)
        if errors is not None:
            return invalid_form_body(errors)
        return self._registered(body, guild)

    async def _put_guild_commands(self, request: web.Request, app: str, guild: str) -> web.Response:
        if int(guild) not in self.guilds:
            return error_response("missing_access")
        done = await self._put_commands(request, int(guild))
        if isinstance(done, web.Response):
            return done
        self.guild_commands[int(guild)] = done
        return json_response(done)

    async def _put_global_commands(self, request: web.Request, app: str) -> web.Response:
        done = await self._put_commands(request, None)
        if isinstance(done, web.Response):
            return done
        self.global_commands = done
        return json_response(done)

    async def _get_guild_commands(self, request: web.Request, app: str, guild: str) -> web.Response:
        return json_response(self.guild_commands.get(int(guild), []))

    async def _get_global_commands(self, request: web.Request, app: str) -> web.Response:
        return json_response(self.global_commands)

    # -- what tests do: see driving.py ------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("timed out waiting for the bot")
            await asyncio.sleep(0.05)


def _option_response(option: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in option.items() if v is not None}
    if "options" in out:
        out["options"] = [_option_response(o) for o in out["options"]]
    return out
