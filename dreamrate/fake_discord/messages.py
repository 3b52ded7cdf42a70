"""The local Discord's messages and reactions: create, read, edit, delete, history, DMs,
and reactions with real or custom emoji, each within Discord's permissions and limits."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from dreamrate.fake_discord.emoji import MAX_REACTIONS, ReactionEmoji, parse_emoji
from dreamrate.fake_discord.limits import history_errors, is_empty_message, message_errors
from dreamrate.fake_discord.payloads import (
    ADD_REACTIONS,
    ATTACH_FILES,
    BOT_ID,
    BOT_USER,
    EMBED_LINKS,
    MANAGE_MESSAGES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    VIEW_CHANNEL,
    error_response,
    invalid_form_body,
    json_response,
    member_fields,
    now_iso,
    snowflake,
    user_payload,
)
from dreamrate.fake_discord.world import Channel

__all__ = ["EPHEMERAL", "LOADING", "Messages"]

EPHEMERAL = 1 << 6
LOADING = 1 << 7


class Messages:
    """The message and reaction routes: a part of
    :class:`~dreamrate.fake_discord.server.FakeDiscord`, working on its state."""

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

    def _refused_body(
        self,
        channel_id: int,
        payload: dict[str, Any],
        files: list[tuple[str, bytes]],
        *,
        new: bool,
    ) -> web.Response | None:
        """Discord's 400/413 for a message body outside its documented limits, else None."""
        limit = self.upload_limit(channel_id)
        if any(len(data) > limit for _, data in files):
            return error_response("too_large")
        errors = message_errors(payload)
        if errors is not None:
            return invalid_form_body(errors)
        if new and is_empty_message(payload, len(files)):
            return error_response("empty_message")
        return None

    # -- messages -------------------------------------------------------------------------

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
            "attachments": [],
            "embeds": _embeds(payload.get("embeds")),
            "pinned": False,
            "type": 0,
            "flags": payload.get("flags") or 0,
            "components": _components(payload.get("components")),
            **extra,
        }
        self.messages[message_id] = message
        self.files[message_id] = []
        self.reactions[message_id] = {}
        self._attach(message, files)
        return message

    def _attach(self, message: dict[str, Any], files: list[tuple[str, bytes]]) -> None:
        """Add uploaded files to a message as Discord lists its attachments."""
        message_id = int(message["id"])
        for name, data in files:
            url = f"http://127.0.0.1:{self.port}/files/{message_id}/{name}"
            message["attachments"].append(
                {
                    "id": snowflake(),
                    "filename": name,
                    "size": len(data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": "image/" + name.rsplit(".", 1)[-1],
                }
            )
            self.files.setdefault(message_id, []).append(data)

    def _public(self, message: dict[str, Any]) -> dict[str, Any]:
        """A message as REST and the gateway show it (without the server's own keys)."""
        return {k: v for k, v in message.items() if k != "guild_id"}

    async def _created(self, message: dict[str, Any]) -> None:
        if not message["flags"] & EPHEMERAL:  # ephemeral messages reach only their member
            await self.dispatch(
                "MESSAGE_CREATE",
                {**message, "member": _bot_member()} if "guild_id" in message else message,
            )

    def _update(self, message: dict[str, Any], body: dict[str, Any]) -> None:
        for key in ("content", "embeds", "components", "attachments"):
            if key not in body:
                continue
            value = body[key]
            if key == "embeds":
                value = _embeds(value)
            elif key == "components":
                value = _components(value)
            elif key == "attachments":  # kept ones are named by id; new files are added later
                keep = {str(a.get("id")) for a in value or []}
                value = [a for a in message["attachments"] if a["id"] in keep]
            message[key] = value if value is not None else ([] if key != "content" else "")
        message["edited_timestamp"] = now_iso()

    async def _post_message(self, request: web.Request, channel_id: str) -> web.Response:
        body, files = await self._read_message_body(request)
        denied = self._deny(int(channel_id), SEND_MESSAGES | self._content_needs(body, files))
        if denied is not None:
            return denied
        refused = self._refused_body(int(channel_id), body, files, new=True)
        if refused is not None:
            return refused
        message = self._store_message(int(channel_id), body, files)
        await self._created(message)
        return json_response(self._with_reactions(message))

    def _message_in(self, channel_id: str, message_id: str) -> dict[str, Any] | None:
        message = self.messages.get(int(message_id))
        if message is None or message["channel_id"] != channel_id:
            return None
        return message if not message["flags"] & EPHEMERAL else None  # not in the channel

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
        body, files = await self._read_message_body(request)
        denied = self._deny(int(channel_id))
        message = self._message_in(channel_id, message_id)
        if denied is not None or message is None:
            return denied or error_response("unknown_message")
        if message["author"]["id"] != str(BOT_ID) and set(body) - {"flags"}:
            return json_response(
                {"message": "Cannot edit a message authored by another user", "code": 50005}, 403
            )
        refused = self._refused_body(int(channel_id), body, files, new=False)
        if refused is not None:
            return refused
        self._update(message, body)
        await self.dispatch("MESSAGE_UPDATE", self._public(message))
        return json_response(self._with_reactions(message))

    async def _delete_message(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        message = self._message_in(channel_id, message_id)
        own = message is not None and message["author"]["id"] == str(BOT_ID)
        denied = self._deny(int(channel_id), 0 if own else MANAGE_MESSAGES)
        if denied is not None or message is None:
            return denied or error_response("unknown_message")
        await self._remove_message(int(message_id))
        return web.Response(status=204)

    async def _remove_message(self, message_id: int) -> None:
        message = self.messages.pop(message_id)
        event = {"id": message["id"], "channel_id": message["channel_id"]}
        if "guild_id" in message:
            event["guild_id"] = message["guild_id"]
        await self.dispatch("MESSAGE_DELETE", event)

    async def _history(self, request: web.Request, channel_id: str) -> web.Response:
        """Discord's paging: newest first whichever of ``before``/``after``/``around`` is
        given (discord.py pages ``after=`` onward from the first, the newest, of each page)."""
        denied = self._deny(int(channel_id), reading=True)
        if denied is not None:
            return denied
        errors = history_errors(request.query)
        if errors is not None:
            return invalid_form_body(errors)
        limit = int(request.query.get("limit", 50))
        here = sorted(
            int(m["id"])
            for m in self.messages.values()
            if m["channel_id"] == channel_id and not m["flags"] & EPHEMERAL
        )
        if "around" in request.query:
            around = int(request.query["around"])
            older = [m for m in here if m < around][-(limit // 2) :] if limit > 1 else []
            newer = [m for m in here if m >= around][: limit - len(older)]
            found = older + newer
        elif "after" in request.query:
            found = [m for m in here if m > int(request.query["after"])][:limit]
        else:
            before = int(request.query.get("before", 1 << 63))
            found = [m for m in here if m < before][-limit:]
        return json_response([self._with_reactions(self.messages[m]) for m in reversed(found)])

    async def _get_channel(self, request: web.Request, channel_id: str) -> web.Response:
        denied = self._deny(int(channel_id))
        channel = self.channel(int(channel_id))
        return denied or json_response(channel.payload())  # type: ignore[union-attr]

    async def _open_dm(self, request: web.Request) -> web.Response:
        body = await request.json()
        member_id = int(body["recipient_id"])
        channel = self._dm(member_id)
        name = self._member_names.get(member_id, f"user{member_id}")
        return json_response({**channel.payload(), "recipients": [user_payload(member_id, name)]})

    def _dm(self, member_id: int) -> Channel:
        if member_id not in self.dms:
            self.dms[member_id] = Channel(int(snowflake()), "dm", None)
        return self.dms[member_id]

    # -- reactions ------------------------------------------------------------------------

    def _with_reactions(self, message: dict[str, Any]) -> dict[str, Any]:
        reactions = self.reactions.get(int(message["id"]), {})
        custom = self.custom_emoji()
        return {
            **self._public(message),
            "reactions": [
                {
                    "emoji": _emoji_of(key, custom).payload(),
                    "count": len(users),
                    "me": BOT_ID in users,
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me_burst": False,
                    "burst_colors": [],
                }
                for key, users in reactions.items()
                if users
            ],
        }

    def _reaction_target(
        self, channel_id: str, message_id: str, emoji: str, need: int = 0, *, reading: bool = False
    ) -> tuple[dict[str, Any], ReactionEmoji] | web.Response:
        denied = self._deny(int(channel_id), need, reading=reading)
        if denied is not None:
            return denied
        message = self._message_in(channel_id, message_id)
        if message is None:
            return error_response("unknown_message")
        parsed = parse_emoji(unquote(emoji), self.custom_emoji())
        if parsed is None:
            return error_response("unknown_emoji")
        return message, parsed

    async def _bot_react(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        target = self._reaction_target(
            channel_id, message_id, emoji, READ_MESSAGE_HISTORY | ADD_REACTIONS
        )
        if isinstance(target, web.Response):
            return target
        _, parsed = target
        on_message = self.reactions.setdefault(int(message_id), {})
        present = {k for k, users in on_message.items() if users}
        if parsed.key not in present and len(present) >= MAX_REACTIONS:
            return error_response("max_reactions")
        users = on_message.setdefault(parsed.key, [])
        if BOT_ID not in users:
            users.append(BOT_ID)
            await self._reaction_event(True, BOT_ID, int(message_id), parsed)
        return web.Response(status=204)

    async def _bot_unreact(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        target = self._reaction_target(channel_id, message_id, emoji, READ_MESSAGE_HISTORY)
        if isinstance(target, web.Response):
            return target
        _, parsed = target
        users = self.reactions.setdefault(int(message_id), {}).get(parsed.key, [])
        if BOT_ID in users:
            users.remove(BOT_ID)
            await self._reaction_event(False, BOT_ID, int(message_id), parsed)
        return web.Response(status=204)

    async def _reaction_users(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        target = self._reaction_target(channel_id, message_id, emoji, reading=True)
        if isinstance(target, web.Response):
            return target
        _, parsed = target
        try:
            limit = int(request.query.get("limit", 25))
            after = int(request.query.get("after", 0))
        except ValueError:
            limit = after = -1
        if not 1 <= limit <= 100 or after < 0:
            return invalid_form_body(
                {
                    "limit": {
                        "_errors": [
                            {"code": "NUMBER_TYPE_MAX", "message": "Int must be between 1 and 100."}
                        ]
                    }
                }
            )
        users = sorted(
            u for u in self.reactions.get(int(message_id), {}).get(parsed.key, []) if u > after
        )[:limit]
        return json_response(
            [
                BOT_USER if u == BOT_ID else user_payload(u, self._member_names.get(u, f"user{u}"))
                for u in users
            ]
        )

    async def _clear_emoji(
        self, request: web.Request, channel_id: str, message_id: str, emoji: str
    ) -> web.Response:
        target = self._reaction_target(channel_id, message_id, emoji, MANAGE_MESSAGES)
        if isinstance(target, web.Response):
            return target
        _, parsed = target
        await self._clear(int(message_id), parsed)
        return web.Response(status=204)

    async def _clear_reactions(
        self, request: web.Request, channel_id: str, message_id: str
    ) -> web.Response:
        denied = self._deny(int(channel_id), MANAGE_MESSAGES)
        if denied is not None:
            return denied
        if self._message_in(channel_id, message_id) is None:
            return error_response("unknown_message")
        await self._clear(int(message_id), None)
        return web.Response(status=204)


def _emoji_of(key: str, custom: dict[int, ReactionEmoji]) -> ReactionEmoji:
    if ":" in key:
        name, emoji_id = key.rsplit(":", 1)
        return custom.get(int(emoji_id), ReactionEmoji(name, int(emoji_id)))
    return ReactionEmoji(key)


def _bot_member() -> dict[str, Any]:
    return {k: v for k, v in member_fields(BOT_USER).items() if k != "user"}


def _embeds(embeds: Any) -> list[dict[str, Any]]:
    """Embeds as Discord returns them: ``type`` "rich" and every field's ``inline`` set."""
    shaped = []
    for embed in embeds or []:
        out = {k: v for k, v in embed.items() if v is not None}
        out.setdefault("type", "rich")
        if "fields" in out:
            out["fields"] = [{"inline": False, **f} for f in out["fields"]]
        for media in ("image", "thumbnail"):
            if isinstance(out.get(media), dict):
                out[media] = {**out[media], "proxy_url": out[media].get("url", "")}
        shaped.append(out)
    return shaped


def _components(rows: Any) -> list[dict[str, Any]]:
    """Components as Discord returns them: each numbered with an ``id`` (depth first)."""
    counter = 0

    def numbered(component: dict[str, Any]) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        out = {**component, "id": component.get("id") or counter}
        if isinstance(out.get("emoji"), dict):  # a Unicode emoji has no id at all
            out["emoji"] = {k: v for k, v in out["emoji"].items() if v is not None}
        if "components" in out:
            out["components"] = [numbered(c) for c in out["components"]]
        return out

    return [numbered(row) for row in rows or []]
