"""A small Discord-compatible server (REST + gateway) for end-to-end tests and `dreamrate demo`.

This is a test double, not a Discord client: an unmodified discord.py client talks to it
over HTTP and a websocket when ``discord.http.Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY`` point here (dreamrate sets them from
``DREAMRATE_DISCORD_API_BASE`` / ``..._GATEWAY_URL``). Payloads follow Discord's documented
shapes, as far as discord.py reads them. Tests drive it: inject interactions and
reactions, read what the bot sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from dreamrate.fake_discord.payloads import (
    APP_ID,
    BASIC,
    BOT_ID,
    BOT_USER,
    CHANNEL_ID,
    GUILD_ID,
    Member,
    guild_payload,
    json_response,
    match_route,
    now_iso,
    snowflake,
)

__all__ = ["FakeDiscord"]


class FakeDiscord:
    """The server; ``await start()``, then point the bot at ``api_base`` / ``gateway_url``."""

    def __init__(self) -> None:
        self.messages: dict[int, dict[str, Any]] = {}
        self.reactions: dict[
            int, dict[str, list[int]]
        ] = {}  # message -> emoji -> user ids, in order
        self.commands: list[dict[str, Any]] = []
        self.callbacks: dict[str, list[dict[str, Any]]] = {}  # interaction id -> responses
        self.originals: dict[
            str, dict[str, Any]
        ] = {}  # interaction token -> original response message
        self.edits: dict[str, list[dict[str, Any]]] = {}  # token -> each edit of the original
        self.followups: dict[str, list[int]] = {}  # token -> message ids
        self.files: dict[int, list[bytes]] = {}
        self.identifies = 0
        self.resumes = 0
        #: Reaction events sent to the bot since its last IDENTIFY (a new session).
        self.session_reactions = 0
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
                        "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                        "session_id": self._session,
                        "resume_gateway_url": self.gateway_url,
                        "application": {"id": str(APP_ID), "flags": 0},
                        "private_channels": [],
                    },
                )
                await self.dispatch("GUILD_CREATE", guild_payload())
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
        for pattern, handler in self._routes():
            if pattern[0] == method and match_route(pattern[1], path) is not None:
                return await handler(request, *match_route(pattern[1], path))  # type: ignore[misc]
        return json_response(
            {"message": f"fake server: no route {method} {path}", "code": 0}, status=404
        )

    def _routes(self) -> list[tuple[tuple[str, str], Callable[..., Any]]]:
        return [
            (("GET", "/users/@me"), self._me),
            (("GET", "/oauth2/applications/@me"), self._app),
            (("GET", "/applications/@me"), self._app),
            (("PUT", "/applications/*/guilds/*/commands"), self._put_commands),
            (("PUT", "/applications/*/commands"), self._put_commands),
            (("GET", "/applications/*/guilds/*/commands"), self._get_commands),
            (("POST", "/interactions/*/*/callback"), self._callback),
            (("PATCH", "/webhooks/*/*/messages/@original"), self._edit_original),
            (("GET", "/webhooks/*/*/messages/@original"), self._get_original),
            (("POST", "/webhooks/*/*"), self._followup),
            (("POST", "/channels/*/messages"), self._post_message),
            (("GET", "/channels/*/messages"), self._history),
            (("GET", "/channels/*/messages/*"), self._get_message),
            (("PATCH", "/channels/*/messages/*"), self._edit_message),
            (("DELETE", "/channels/*/messages/*"), self._delete_message),
            (("PUT", "/channels/*/messages/*/reactions/*/@me"), self._bot_react),
            (("GET", "/channels/*/messages/*/reactions/*"), self._reaction_users),
            (("GET", "/channels/*"), self._channel),
        ]

    async def _me(self, request: web.Request) -> web.Response:
        return json_response(BOT_USER)

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

    async def _put_commands(self, request: web.Request, *_: str) -> web.Response:
        body = await request.json()
        self.commands = [
            {
                **c,
                "id": snowflake(),
                "application_id": str(APP_ID),
                "version": "1",
                "default_member_permissions": c.get("default_member_permissions"),
            }
            for c in body
        ]
        return json_response(self.commands)

    async def _get_commands(self, request: web.Request, *_: str) -> web.Response:
        return json_response(self.commands)

    async def _read_message_body(
        self, request: web.Request
    ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            files: list[tuple[str, bytes]] = []
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files.append((part.filename or "file", bytes(await part.read())))
            return payload, files
        text = await request.text()
        return (json.loads(text) if text else {}), []

    def _store_message(
        self, channel_id: int, payload: dict[str, Any], files: list[tuple[str, bytes]], **extra: Any
    ) -> dict[str, Any]:
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
            "guild_id": str(GUILD_ID),
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

    async def _callback(
        self, request: web.Request, interaction_id: str, token: str
    ) -> web.Response:
        body, files = await self._read_message_body(request)
        self.callbacks.setdefault(interaction_id, []).append(body)
        data = body.get("data") or {}
        kind = body.get("type")
        message = None
        if kind in (4, 5):
            message = self._store_message(CHANNEL_ID, data, files, application_id=str(APP_ID))
            self.originals[token] = message
        # discord.py asks ?with_response=1 and reads an interaction callback response.
        return json_response(
            {
                "interaction": {
                    "id": interaction_id,
                    "type": 2,
                    "response_message_id": message and message["id"],
                    "response_message_loading": kind == 5,
                    "response_message_ephemeral": bool(data.get("flags", 0) & 64),
                },
                "resource": {"type": kind, **({"message": message} if message else {})},
            }
        )

    async def _edit_original(self, request: web.Request, app_id: str, token: str) -> web.Response:
        body, _ = await self._read_message_body(request)
        original = self.originals[token]
        original.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
        original["edited_timestamp"] = now_iso()
        self.edits.setdefault(token, []).append(body)
        return json_response(original)

    async def _get_original(self, request: web.Request, app_id: str, token: str) -> web.Response:
        return json_response(self.originals[token])

    async def _followup(self, request: web.Request, app_id: str, token: str) -> web.Response:
        body, files = await self._read_message_body(request)
        message = self._store_message(
            CHANNEL_ID, body, files, webhook_id=str(APP_ID), application_id=str(APP_ID)
        )
        self.followups.setdefault(token, []).append(int(message["id"]))
        return json_response(message)

    async def _post_message(self, request: web.Request, channel_id: str) -> web.Response:
        body, files = await self._read_message_body(request)
        return json_response(self._store_message(int(channel_id), body, files))

    async def _get_message(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        message = self.messages.get(int(message_id))
        if message is None:
            return json_response({"message": "Unknown Message", "code": 10008}, status=404)
        return json_response(self._with_reactions(message))

    async def _edit_message(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        body, _ = await self._read_message_body(request)
        message = self.messages[int(message_id)]
        message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
        return json_response(self._with_reactions(message))

    async def _delete_message(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        self.messages.pop(int(message_id), None)
        return web.Response(status=204)

    async def _history(self, request: web.Request, channel_id: str) -> web.Response:
        limit = int(request.query.get("limit", 50))
        before = int(request.query.get("before", 1 << 63))
        after = int(request.query.get("after", 0))
        found = sorted(
            (
                m
                for mid, m in self.messages.items()
                if int(m["channel_id"]) == int(channel_id) and after < mid < before
            ),
            key=lambda m: int(m["id"]),
            reverse="after" not in request.query,
        )[:limit]
        return json_response([self._with_reactions(m) for m in found])

    async def _channel(self, request: web.Request, channel_id: str) -> web.Response:
        return json_response(
            {
                "id": channel_id,
                "type": 0,
                "name": "dreams",
                "guild_id": str(GUILD_ID),
                "position": 0,
                "permission_overwrites": [],
            }
        )

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
        users = self.reactions.setdefault(int(message_id), {}).setdefault(unquote(emoji), [])
        if BOT_ID not in users:
            users.append(BOT_ID)
            await self._reaction_event(True, BOT_ID, int(message_id), unquote(emoji))
        return web.Response(status=204)

    async def _reaction_users(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
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
                    "username": f"user{u}",
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
        data: dict[str, Any] = {
            "user_id": str(user_id),
            "channel_id": self.messages[message_id]["channel_id"],
            "message_id": str(message_id),
            "guild_id": str(GUILD_ID),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if added:
            data["member"] = (
                Member(user_id, f"user{user_id}").member() if user_id != BOT_ID else None
            )
            data["message_author_id"] = str(BOT_ID)
            data["burst_colors"] = []
            if data["member"] is None:
                data.pop("member")
        self.session_reactions += 1
        await self.dispatch("MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE", data)

    async def react(self, member: Member, message_id: int, emoji: str) -> None:
        users = self.reactions.setdefault(message_id, {}).setdefault(emoji, [])
        if member.id not in users:
            users.append(member.id)
        await self._reaction_event(True, member.id, message_id, emoji)

    async def unreact(self, member: Member, message_id: int, emoji: str) -> None:
        users = self.reactions.setdefault(message_id, {}).setdefault(emoji, [])
        if member.id in users:
            users.remove(member.id)
        await self._reaction_event(False, member.id, message_id, emoji)

    async def slash(
        self,
        member: Member,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        subcommand: str | None = None,
    ) -> tuple[str, str]:
        """Send a slash command as ``member``; returns ``(interaction id, token)``."""
        command = next(c for c in self.commands if c["name"] == name)
        opts = options or []
        if subcommand is not None:
            opts = [{"type": 1, "name": subcommand, "options": opts}]
        interaction_id, token = snowflake(), "tok-" + snowflake()
        resolved: dict[str, dict[str, Any]] = {}
        for option in options or []:
            if option["type"] == 6:  # USER
                other = Member(int(option["value"]), f"user{option['value']}")
                resolved.setdefault("users", {})[str(other.id)] = other.user()
                resolved.setdefault("members", {})[str(other.id)] = {
                    k: v for k, v in other.member().items() if k != "user"
                }
            elif option["type"] == 7:  # CHANNEL
                resolved.setdefault("channels", {})[str(option["value"])] = {
                    "id": str(option["value"]),
                    "type": 0,
                    "name": "dreams",
                    "permissions": str(BASIC),
                    "guild_id": str(GUILD_ID),
                }
        data = {
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": opts,
            "guild_id": str(GUILD_ID),
            "resolved": resolved,
        }
        await self._interaction(member, 2, interaction_id, token, data)
        return interaction_id, token

    async def click(self, member: Member, message_id: int, custom_id: str) -> tuple[str, str]:
        """Press a button on a message as ``member``; returns ``(interaction id, token)``."""
        interaction_id, token = snowflake(), "tok-" + snowflake()
        data = {"custom_id": custom_id, "component_type": 2}
        message = self._with_reactions(self.messages[message_id])
        await self._interaction(member, 3, interaction_id, token, data, message=message)
        return interaction_id, token

    async def _interaction(
        self,
        member: Member,
        kind: int,
        interaction_id: str,
        token: str,
        data: dict[str, Any],
        **extra: Any,
    ) -> None:
        """Dispatch INTERACTION_CREATE in Discord's shape (2: slash command, 3: component)."""
        channel = {
            "id": str(CHANNEL_ID),
            "type": 0,
            "name": "dreams",
            "guild_id": str(GUILD_ID),
            "position": 0,
            "permission_overwrites": [],
        }
        await self.dispatch(
            "INTERACTION_CREATE",
            {
                "id": interaction_id,
                "application_id": str(APP_ID),
                "type": kind,
                "token": token,
                "version": 1,
                "data": data,
                "guild_id": str(GUILD_ID),
                "channel_id": str(CHANNEL_ID),
                "channel": channel,
                "member": member.member(),
                "app_permissions": str(BASIC),
                "locale": "en-US",
                "guild_locale": "en-US",
                "entitlements": [],
                "authorizing_integration_owners": {"0": str(GUILD_ID)},
                "context": 0,
                "attachment_size_limit": 8 * 1024 * 1024,
                **extra,
            },
        )

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("timed out waiting for the bot")
            await asyncio.sleep(0.05)
