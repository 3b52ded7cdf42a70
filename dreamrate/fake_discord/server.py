"""A Discord-compatible server (REST + gateway) for end-to-end tests and `dreamrate demo`.

This is a test double, not a Discord client: an unmodified discord.py client talks to it
over HTTP and a websocket when ``discord.http.Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY`` point here (dreamrate sets them from
``DREAMRATE_DISCORD_API_BASE`` / ``..._GATEWAY_URL``). It behaves like Discord where a bot
meets Discord's edges: several guilds with their own channels, roles and commands, DMs,
per-channel permissions of the bot with Discord's 403/404 bodies, rate-limit buckets with
their headers and 429s, the 3 s acknowledgement deadline and the 15-minute interaction
token. Tests drive it (slash commands, buttons, reactions, permission changes) and read
what the bot sent and what it cost (429s, invalid requests, acknowledgement latency).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from dreamrate.fake_discord.oauth import OAuthServer
from dreamrate.fake_discord.payloads import (
    ADD_REACTIONS,
    APP_ID,
    ATTACH_FILES,
    BASIC,
    BOT_ID,
    BOT_USER,
    EMBED_LINKS,
    GUILD_ID,
    MANAGE_MESSAGES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    Member,
    error_response,
    json_response,
    match_route,
    now_iso,
    snowflake,
)
from dreamrate.fake_discord.ratelimits import RateLimiter, bucket_for
from dreamrate.fake_discord.world import Channel, Guild, default_world

__all__ = ["FakeDiscord"]

EPHEMERAL = 1 << 6
#: Statuses Discord counts as invalid requests (an IP is banned past 10,000 in 10 minutes).
INVALID_STATUSES = (401, 403, 429)


@dataclass
class _Interaction:
    id: str
    token: str
    channel_id: int
    dispatched: float
    acknowledged: bool = False


class FakeDiscord:
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
    """

    def __init__(
        self,
        *,
        rate_limits: bool = True,
        guilds: dict[int, Guild] | None = None,
        ack_deadline: float = 3.0,
        token_lifetime: float = 15 * 60,
    ) -> None:
        self.guilds = guilds if guilds is not None else default_world()
        self.dms: dict[int, Channel] = {}  # member id -> their DM channel with the bot
        self.messages: dict[int, dict[str, Any]] = {}
        self.reactions: dict[int, dict[str, list[int]]] = {}  # message -> emoji -> user ids
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
        self.identifies = 0
        self.resumes = 0
        #: Reaction events sent to the bot since its last IDENTIFY (a new session).
        self.session_reactions = 0
        self._interactions: dict[str, _Interaction] = {}  # by token
        self._member_names: dict[int, str] = {}
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._session = "session-" + snowflake()
        self._runner: web.AppRunner | None = None
        self._connected = asyncio.Event()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/oauth2/authorize", self.oauth.authorize_page)
        app.router.add_post("/oauth2/authorize", self.oauth.authorize)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
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
        """Whether a bot holds a live gateway session (events reach it)."""
        return self._connected.is_set() and self._ws is not None and not self._ws.closed

    async def wait_connected(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def wait_disconnected(self, timeout: float = 30) -> None:
        """Until the bot's gateway socket is closed (events sent now never reach it)."""
        await self.wait_for(lambda: not self.connected, timeout)

    async def drop_connection(self) -> None:
        """Close the gateway socket as a network failure would (the bot resumes)."""
        self._connected.clear()
        if self._ws is not None:
            await self._ws.close(code=4000)

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
        if self.connected:
            await self.dispatch("CHANNEL_DELETE", channel.payload())

    def _member_payload(self, member: Member, guild: Guild) -> dict[str, Any]:
        return member.member(
            permissions=guild.member_permissions.get(member.id, member.permissions),
            role_ids=guild.role_ids(member.roles),
        )

    # -- gateway --------------------------------------------------------------------------

    async def _send(self, op: int, d: Any, t: str | None = None) -> None:
        assert self._ws is not None
        payload: dict[str, Any] = {"op": op, "d": d, "s": None, "t": t}
        if op == 0:
            self._seq += 1
            payload["s"] = self._seq
        await self._ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await self._send(0, data, event)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await self._send(10, {"heartbeat_interval": 41250})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            op = data["op"]
            if op == 1:
                await self._send(11, None)
            elif op == 2:
                self.identifies += 1
                self.session_reactions = 0
                self._seq = 0
                await self.dispatch(
                    "READY",
                    {
                        "v": 10,
                        "user": BOT_USER,
                        "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                        "session_id": self._session,
                        "resume_gateway_url": self.gateway_url,
                        "application": {"id": str(APP_ID), "flags": 0},
                        "private_channels": [],
                    },
                )
                for guild in self.guilds.values():
                    await self.dispatch("GUILD_CREATE", guild.payload())
                self._connected.set()
            elif op == 6:
                self.resumes += 1
                await self.dispatch("RESUMED", {})
                self._connected.set()
        if self._ws is ws:
            self._connected.clear()  # the socket is gone: nothing more reaches that bot
        return ws

    # -- REST -----------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        for (verb, pattern), handler in self._routes():
            args = match_route(pattern, path) if verb == method else None
            if args is None:
                continue
            headers: dict[str, str] = {}
            if not pattern.startswith("/interactions/"):  # callbacks are not rate limited
                decision = self.limiter.check(*bucket_for(method, pattern, args))
                headers = decision.headers
                if decision.retry_after:
                    return self._answer(
                        self._too_many(decision.retry_after, decision.is_global, headers)
                    )
            response = await handler(request, *args)
            response.headers.update(headers)
            return self._answer(response)
        return self._answer(
            json_response({"message": f"fake server: no route {method} {path}", "code": 0}, 404)
        )

    def _answer(self, response: web.StreamResponse) -> web.StreamResponse:
        self.statuses[response.status] += 1
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
            },
            status=429,
            headers=extra,
        )

    def _routes(self) -> list[tuple[tuple[str, str], Callable[..., Any]]]:
        return [
            (("GET", "/users/@me"), self._me),
            (("GET", "/users/@me/guilds"), self._my_guilds),
            (("POST", "/oauth2/token"), self._token),
            (("GET", "/oauth2/applications/@me"), self._app),
            (("GET", "/applications/@me"), self._app),
            (("PUT", "/applications/*/guilds/*/commands"), self._put_guild_commands),
            (("PUT", "/applications/*/commands"), self._put_global_commands),
            (("GET", "/applications/*/guilds/*/commands"), self._get_guild_commands),
            (("GET", "/applications/*/commands"), self._get_global_commands),
            (("POST", "/interactions/*/*/callback"), self._callback),
            (("PATCH", "/webhooks/*/*/messages/@original"), self._edit_original),
            (("GET", "/webhooks/*/*/messages/@original"), self._get_original),
            (("POST", "/webhooks/*/*"), self._followup),
            (("POST", "/users/@me/channels"), self._open_dm),
            (("POST", "/channels/*/messages"), self._post_message),
            (("GET", "/channels/*/messages"), self._history),
            (("GET", "/channels/*/messages/*"), self._get_message),
            (("PATCH", "/channels/*/messages/*"), self._edit_message),
            (("DELETE", "/channels/*/messages/*"), self._delete_message),
            (("PUT", "/channels/*/messages/*/reactions/*/@me"), self._bot_react),
            (("GET", "/channels/*/messages/*/reactions/*"), self._reaction_users),
            (("GET", "/channels/*"), self._get_channel),
            (("GET", "/guilds/*/members/*"), self._guild_member),
            (("GET", "/guilds/*/roles"), self._guild_roles),
        ]

    def _deny(
        self, channel_id: int, need: int = 0, *, reading: bool = False
    ) -> web.Response | None:
        """Discord's answer when the bot may not do ``need`` in the channel, else None."""
        channel = self.channel(channel_id)
        if channel is None or channel.deleted:
            return error_response("unknown_channel")
        if channel.guild_id is None:
            return None  # a DM: the member opened it with the bot
        have = channel.bot_permissions
        if not have & VIEW_CHANNEL or (reading and not have & READ_MESSAGE_HISTORY):
            return error_response("missing_access")
        if need & ~have:
            return error_response("missing_permissions")
        return None

    @staticmethod
    def _content_needs(payload: dict[str, Any], files: list[tuple[str, bytes]]) -> int:
        return (ATTACH_FILES if files else 0) | (EMBED_LINKS if payload.get("embeds") else 0)

    async def _me(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").startswith("Bearer "):
            grant = self.oauth.grant_of(request)
            return self.oauth.unauthorized() if grant is None else self.oauth.me(grant)
        return json_response(BOT_USER)

    async def _my_guilds(self, request: web.Request) -> web.Response:
        """The guilds of the member a bearer token belongs to, or the bot's own."""
        if request.headers.get("Authorization", "").startswith("Bearer "):
            grant = self.oauth.grant_of(request)
            return self.oauth.unauthorized() if grant is None else self.oauth.my_guilds(grant)
        return json_response(
            [
                {"id": str(g.id), "name": g.name, "icon": None, "owner": False,
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
        return json_response(self._member_payload(account.member, guild))

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
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": {**BOT_USER, "bot": False},
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "summary": "",
                "rpc_origins": [],
            }
        )

    def _registered(self, body: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                **c,
                "id": snowflake(),
                "application_id": str(APP_ID),
                "version": "1",
                "default_member_permissions": c.get("default_member_permissions"),
            }
            for c in body
        ]

    async def _put_guild_commands(self, request: web.Request, app: str, guild: str) -> web.Response:
        self.guild_commands[int(guild)] = self._registered(await request.json())
        return json_response(self.guild_commands[int(guild)])

    async def _put_global_commands(self, request: web.Request, app: str) -> web.Response:
        self.global_commands = self._registered(await request.json())
        return json_response(self.global_commands)

    async def _get_guild_commands(self, request: web.Request, app: str, guild: str) -> web.Response:
        return json_response(self.guild_commands.get(int(guild), []))

    async def _get_global_commands(self, request: web.Request, app: str) -> web.Response:
        return json_response(self.global_commands)

    async def _read_message_body(
        self, request: web.Request
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            files: list[tuple[str, bytes]] = []
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())  # type: ignore[union-attr]
                else:
                    files.append((part.filename or "file", bytes(await part.read())))  # type: ignore[union-attr]
            return payload, files
        text = await request.text()
        return (json.loads(text) if text else {}), []

    def _store_message(
        self, channel_id: int, payload: dict[str, Any], files: list[tuple[str, bytes]], **extra: Any
    ) -> dict[str, Any]:
        channel = self.channel(channel_id)
        message_id = int(snowflake())
        attachments = [
            {
                "id": snowflake(),
                "filename": name,
                "size": len(data),
                "url": f"http://127.0.0.1:{self.port}/files/{message_id}/{name}",
                "proxy_url": "",
                "content_type": "image/" + name.rsplit(".", 1)[-1],
            }
            for name, data in files
        ]
        content = payload.get("content") or ""
        # As Discord does: @everyone/@here ping unless allowed_mentions leaves "everyone" out.
        allowed = payload.get("allowed_mentions")
        may_ping = allowed is None or "everyone" in (allowed.get("parse") or [])
        message = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            **({"guild_id": str(channel.guild_id)} if channel and channel.guild_id else {}),
            "author": BOT_USER,
            "content": content,
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": may_ping and ("@everyone" in content or "@here" in content),
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": payload.get("embeds") or [],
            "pinned": False,
            "type": 0,
            "flags": payload.get("flags") or 0,
            "components": payload.get("components") or [],
            **extra,
        }
        self.messages[message_id] = message
        self.files[message_id] = [data for _, data in files]
        self.reactions[message_id] = {}
        return message

    def _live_interaction(self, token: str) -> _Interaction | web.Response:
        interaction = self._interactions.get(token)
        if interaction is None:
            return error_response("unknown_webhook")
        if time.monotonic() - interaction.dispatched > self.token_lifetime:
            return error_response("invalid_webhook_token")
        return interaction

    async def _callback(
        self, request: web.Request, interaction_id: str, token: str
    ) -> web.Response:
        body, files = await self._read_message_body(request)
        interaction = self._interactions.get(token)
        if interaction is None or interaction.id != interaction_id:
            return error_response("unknown_interaction")
        latency = time.monotonic() - interaction.dispatched
        self.ack_latencies.setdefault(interaction_id, latency)
        if interaction.acknowledged:
            return json_response(
                {"message": "Interaction has already been acknowledged.", "code": 40060}, 400
            )
        if latency > self.ack_deadline:
            return error_response("unknown_interaction")  # the member saw "did not respond"
        interaction.acknowledged = True
        self.callbacks.setdefault(interaction_id, []).append(body)
        data = body.get("data") or {}
        kind = body.get("type")
        message = None
        if kind in (4, 5):
            message = self._store_message(
                interaction.channel_id, data, files, application_id=str(APP_ID)
            )
            self.originals[token] = message
        # discord.py asks ?with_response=1 and reads an interaction callback response.
        return json_response(
            {
                "interaction": {
                    "id": interaction_id,
                    "type": 2,
                    "response_message_id": message and message["id"],
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(data.get("flags", 0) & EPHEMERAL),
                },
                "resource": {"type": kind, **({"message": message} if message else {})},
            }
        )

    async def _edit_original(self, request: web.Request, app_id: str, token: str) -> web.Response:
        body, files = await self._read_message_body(request)
        interaction = self._live_interaction(token)
        if isinstance(interaction, web.Response):
            return interaction
        denied = self._deny(interaction.channel_id, self._content_needs(body, files))
        if denied is not None and denied.status == 403 and not files and not body.get("embeds"):
            denied = None  # editing text of one's own response needs no channel permission
        if denied is not None:
            return denied
        original = self.originals.get(token)
        if original is None:
            return error_response("unknown_message")
        original.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
        original["edited_timestamp"] = now_iso()
        self.edits.setdefault(token, []).append(body)
        return json_response(original)

    async def _get_original(self, request: web.Request, app_id: str, token: str) -> web.Response:
        original = self.originals.get(token)
        return json_response(original) if original else error_response("unknown_message")

    async def _followup(self, request: web.Request, app_id: str, token: str) -> web.Response:
        body, files = await self._read_message_body(request)
        interaction = self._live_interaction(token)
        if isinstance(interaction, web.Response):
            return interaction
        # Follow-ups need no Send Messages, but files and embeds need their permissions.
        channel = self.channel(interaction.channel_id)
        if channel is None or channel.deleted:
            return error_response("unknown_channel")
        if (
            channel.guild_id is not None
            and self._content_needs(body, files) & ~channel.bot_permissions
        ):
            return error_response("missing_permissions")
        message = self._store_message(
            interaction.channel_id, body, files, webhook_id=str(APP_ID), application_id=str(APP_ID)
        )
        self.followups.setdefault(token, []).append(int(message["id"]))
        return json_response(message)

    async def _open_dm(self, request: web.Request) -> web.Response:
        body = await request.json()
        member_id = int(body["recipient_id"])
        return json_response(self._dm(member_id).payload())

    def _dm(self, member_id: int) -> Channel:
        if member_id not in self.dms:
            self.dms[member_id] = Channel(int(snowflake()), "dm", None)
        return self.dms[member_id]

    async def _post_message(self, request: web.Request, channel_id: str) -> web.Response:
        body, files = await self._read_message_body(request)
        denied = self._deny(int(channel_id), SEND_MESSAGES | self._content_needs(body, files))
        return denied or json_response(self._store_message(int(channel_id), body, files))

    def _message_in(self, channel_id: str, message_id: str) -> dict[str, Any] | None:
        message = self.messages.get(int(message_id))
        return message if message is not None and message["channel_id"] == channel_id else None

    async def _get_message(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        denied = self._deny(int(channel_id), reading=True)
        if denied is not None:
            return denied
        message = self._message_in(channel_id, message_id)
        if message is None:
            return error_response("unknown_message")
        return json_response(self._with_reactions(message))

    async def _edit_message(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        body, _ = await self._read_message_body(request)
        denied = self._deny(int(channel_id))
        message = self._message_in(channel_id, message_id)
        if denied is not None or message is None:
            return denied or error_response("unknown_message")
        message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
        return json_response(self._with_reactions(message))

    async def _delete_message(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        message = self._message_in(channel_id, message_id)
        own = message is not None and message["author"]["id"] == str(BOT_ID)
        denied = self._deny(int(channel_id), 0 if own else MANAGE_MESSAGES)
        if denied is not None or message is None:
            return denied or error_response("unknown_message")
        self.messages.pop(int(message_id), None)
        return web.Response(status=204)

    async def _history(self, request: web.Request, channel_id: str) -> web.Response:
        denied = self._deny(int(channel_id), reading=True)
        if denied is not None:
            return denied
        limit = int(request.query.get("limit", 50))
        before = int(request.query.get("before", 1 << 63))
        after = int(request.query.get("after", 0))
        found = sorted(
            (
                m
                for mid, m in self.messages.items()
                if m["channel_id"] == channel_id and after < mid < before
            ),
            key=lambda m: int(m["id"]),
            reverse="after" not in request.query,
        )[:limit]
        return json_response([self._with_reactions(m) for m in found])

    async def _get_channel(self, request: web.Request, channel_id: str) -> web.Response:
        denied = self._deny(int(channel_id))
        channel = self.channel(int(channel_id))
        return denied or json_response(channel.payload())  # type: ignore[union-attr]

    def _with_reactions(self, message: dict[str, Any]) -> dict[str, Any]:
        reactions = self.reactions.get(int(message["id"]), {})
        return {
            **message,
            "reactions": [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": len(users),
                    "me": BOT_ID in users,
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me_burst": False,
                    "burst_colors": [],
                }
                for emoji, users in reactions.items()
                if users
            ],
        }

    async def _bot_react(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        denied = self._deny(int(channel_id), READ_MESSAGE_HISTORY | ADD_REACTIONS)
        if denied is not None:
            return denied
        if self._message_in(channel_id, message_id) is None:
            return error_response("unknown_message")
        users = self.reactions.setdefault(int(message_id), {}).setdefault(unquote(emoji), [])
        if BOT_ID not in users:
            users.append(BOT_ID)
            await self._reaction_event(True, BOT_ID, int(message_id), unquote(emoji))
        return web.Response(status=204)

    async def _reaction_users(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        denied = self._deny(int(channel_id), reading=True)
        if denied is not None:
            return denied
        limit = int(request.query.get("limit", 25))
        after = int(request.query.get("after", 0))
        users = sorted(
            u for u in self.reactions.get(int(message_id), {}).get(unquote(emoji), []) if u > after
        )[:limit]
        return json_response(
            [
                BOT_USER
                if u == BOT_ID
                else {
                    "id": str(u),
                    "username": self._member_names.get(u, f"user{u}"),
                    "discriminator": "0",
                    "global_name": None,
                    "avatar": None,
                }
                for u in users
            ]
        )

    # -- what tests do ----------------------------------------------------------------------

    async def _reaction_event(self, added: bool, user_id: int, message_id: int, emoji: str) -> None:
        if not self.connected:
            return  # the bot is away; backfill must find it
        message = self.messages[message_id]
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": message["channel_id"],
            "message_id": str(message_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        guild = self.guilds.get(int(message.get("guild_id", 0)))
        if guild is not None:
            data["guild_id"] = str(guild.id)
        if added:
            data["message_author_id"] = str(BOT_ID)
            data["burst_colors"] = []
            if user_id != BOT_ID and guild is not None:
                name = self._member_names.get(user_id, f"user{user_id}")
                data["member"] = self._member_payload(Member(user_id, name), guild)
        self.session_reactions += 1
        await self.dispatch("MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE", data)

    async def react(self, member: Member, message_id: int, emoji: str) -> None:
        self._member_names[member.id] = member.name
        users = self.reactions.setdefault(message_id, {}).setdefault(emoji, [])
        if member.id not in users:
            users.append(member.id)
        await self._reaction_event(True, member.id, message_id, emoji)

    async def unreact(self, member: Member, message_id: int, emoji: str) -> None:
        users = self.reactions.setdefault(message_id, {}).setdefault(emoji, [])
        if member.id in users:
            users.remove(member.id)
        await self._reaction_event(False, member.id, message_id, emoji)

    def _command(self, name: str, guild: int | None) -> dict[str, Any]:
        available = [*(self.guild_commands.get(guild, []) if guild else []), *self.global_commands]
        for command in available:
            if command["name"] != name:
                continue
            if guild is None and (
                command.get("dm_permission") is False
                or 1 not in (command.get("contexts") or [0, 1])
            ):
                raise LookupError(f"/{name} is not offered in DMs")
            return command
        where = f"in guild {guild}" if guild else "for DMs"
        raise LookupError(f"/{name} is not registered {where}")

    async def slash(
        self,
        member: Member,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        subcommand: str | None = None,
        guild: int | None = GUILD_ID,
        channel: int | None = None,
        dm: bool = False,
    ) -> tuple[str, str]:
        """Send a slash command as ``member`` in ``channel`` of ``guild`` (default: its first
        channel), or in their DM with the bot; returns ``(interaction id, token)``.

        Raises
        ------
        LookupError
            when Discord would not offer the command there (not registered, or guild-only).
        """
        guild = None if dm else guild
        command = self._command(name, guild)
        opts = options or []
        if subcommand is not None:
            opts = [{"type": 1, "name": subcommand, "options": opts}]
        resolved: dict[str, dict[str, Any]] = {}
        world = self.guilds[guild] if guild is not None else None
        for option in options or []:
            if option["type"] == 6:  # USER
                other = Member(int(option["value"]), f"user{option['value']}")
                resolved.setdefault("users", {})[str(other.id)] = other.user()
                if world is not None:
                    resolved.setdefault("members", {})[str(other.id)] = {
                        k: v for k, v in self._member_payload(other, world).items() if k != "user"
                    }
            elif option["type"] == 7:  # CHANNEL
                target = self.channel(int(option["value"]))
                resolved.setdefault("channels", {})[str(option["value"])] = {
                    "id": str(option["value"]),
                    "type": 0,
                    "name": target.name if target else "unknown",
                    "permissions": str(BASIC),
                    "guild_id": str(target.guild_id if target and target.guild_id else guild),
                }
        data = {"id": command["id"], "name": name, "type": 1, "options": opts, "resolved": resolved}
        if guild is not None:
            data["guild_id"] = str(guild)
        where = self._dm(member.id).id if dm else channel or self.channels_of(guild)[0]  # type: ignore[arg-type]
        return await self._interaction(member, 2, data, where)

    async def click(self, member: Member, message_id: int, custom_id: str) -> tuple[str, str]:
        """Press a button on a message as ``member``; returns ``(interaction id, token)``."""
        data = {"custom_id": custom_id, "component_type": 2}
        message = self._with_reactions(self.messages[message_id])
        return await self._interaction(member, 3, data, int(message["channel_id"]), message=message)

    async def _interaction(
        self, member: Member, kind: int, data: dict[str, Any], channel_id: int, **extra: Any
    ) -> tuple[str, str]:
        """Dispatch INTERACTION_CREATE in Discord's shape (2: slash command, 3: component)."""
        self._member_names[member.id] = member.name
        interaction_id, token = snowflake(), "tok-" + snowflake()
        channel = self.channel(channel_id)
        assert channel is not None, f"no channel {channel_id}"
        guild = self.guilds.get(channel.guild_id or 0)
        body: dict[str, Any] = {
            "id": interaction_id,
            "application_id": str(APP_ID),
            "type": kind,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            # What the bot may do where the member asked, as Discord sends with every interaction.
            "app_permissions": str(channel.bot_permissions if guild else BASIC),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 8 * 1024 * 1024,
            **extra,
        }
        if guild is not None:
            body |= {
                "guild_id": str(guild.id),
                "guild_locale": "en-US",
                "member": self._member_payload(member, guild),
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
            }
        else:
            body |= {
                "user": member.user(),
                "authorizing_integration_owners": {"0": "0"},
                "context": 1,
            }
        self._interactions[token] = _Interaction(
            interaction_id, token, channel.id, time.monotonic()
        )
        await self.dispatch("INTERACTION_CREATE", body)
        return interaction_id, token

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("timed out waiting for the bot")
            await asyncio.sleep(0.05)
