"""The local Discord's gateway: sessions, intents, heartbeats, RESUME with replay, RECONNECT.

As Discord's gateway does: HELLO first; IDENTIFY with the bot's token (else close 4004) and
valid intents (4013; privileged ones the application has not enabled: 4014); events only for
the intents asked; a RESUME with a known session replays every event the client has not
acknowledged by heartbeat, then RESUMED, and an unknown or expired session gets
INVALID_SESSION; a client that stops heartbeating is dropped (4009); an op before
authenticating closes 4003, a second IDENTIFY 4005, an unknown op 4001, bad JSON 4002.
Op 8 (Request Guild Members) is answered with GUILD_MEMBERS_CHUNK. Tests force a reconnect
with op 7 (:meth:`Gateway.request_reconnect`) or drop the socket as a network would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from dreamrate.fake_discord.payloads import snowflake

if TYPE_CHECKING:
    from dreamrate.fake_discord.server import FakeDiscord

__all__ = ["INTENTS", "PRIVILEGED_INTENTS", "Gateway", "GatewaySession"]

logger = logging.getLogger(__name__)

#: Gateway intents (Discord's bits) by name.
INTENTS = {
    "guilds": 1 << 0,
    "guild_members": 1 << 1,
    "guild_presences": 1 << 8,
    "guild_messages": 1 << 9,
    "guild_message_reactions": 1 << 10,
    "direct_messages": 1 << 12,
    "direct_message_reactions": 1 << 13,
    "message_content": 1 << 15,
}
PRIVILEGED_INTENTS = (
    INTENTS["guild_members"] | INTENTS["guild_presences"] | INTENTS["message_content"]
)
#: Every bit Discord defines (up to AUTO_MODERATION_EXECUTION and polls).
ALL_INTENTS = (1 << 26) - 1
#: Event -> (intent in a guild, intent in a DM); 0: sent whatever the intents.
EVENT_INTENTS: dict[str, tuple[int, int]] = {
    "GUILD_CREATE": (INTENTS["guilds"], 0),
    "CHANNEL_CREATE": (INTENTS["guilds"], 0),
    "CHANNEL_DELETE": (INTENTS["guilds"], 0),
    **{
        name: (INTENTS["guild_messages"], INTENTS["direct_messages"])
        for name in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE")
    },
    **{
        name: (INTENTS["guild_message_reactions"], INTENTS["direct_message_reactions"])
        for name in (
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_REMOVE",
            "MESSAGE_REACTION_REMOVE_ALL",
            "MESSAGE_REACTION_REMOVE_EMOJI",
        )
    },
}
#: Message fields emptied for an application without the Message Content intent.
CONTENT_FIELDS = {"content": "", "embeds": [], "attachments": [], "components": []}
#: Events kept for a RESUME (past it the oldest go, and a resume from before them fails).
BACKLOG = 5000


@dataclass
class GatewaySession:
    """One IDENTIFY: what it asked for, its sequence and what the client may still replay."""

    id: str
    intents: int
    seq: int = 0
    backlog: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=BACKLOG))
    ws: web.WebSocketResponse | None = None
    resumable: bool = True

    def wants(self, event: str, data: dict[str, Any]) -> bool:
        guild_intent, dm_intent = EVENT_INTENTS.get(event, (0, 0))
        need = guild_intent if data.get("guild_id") else dm_intent
        return not need or bool(self.intents & need)


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    last_beat: float
    session: GatewaySession | None = None


class Gateway:
    """The gateway side of :class:`~dreamrate.fake_discord.server.FakeDiscord`.

    Parameters
    ----------
    server
        The server whose world and REST state the events describe.
    heartbeat_interval
        Seconds HELLO asks between heartbeats (Discord: 41.25); past 1.5 times it without
        one, the connection is closed with 4009.
    privileged_intents
        Privileged intents the application has enabled (its portal switches).
    """

    def __init__(
        self, server: FakeDiscord, *, heartbeat_interval: float, privileged_intents: int
    ) -> None:
        self.server = server
        self.heartbeat_interval = heartbeat_interval
        self.privileged_intents = privileged_intents
        #: The bot's current session (one bot, one shard).
        self.session: GatewaySession | None = None
        #: Close codes the server sent, in order (4004, 4009, ...).
        self.close_codes: list[int] = []
        self.ready = asyncio.Event()
        self._closed_here: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    @property
    def connected(self) -> bool:
        s = self.session
        return self.ready.is_set() and s is not None and s.ws is not None and not s.ws.closed

    # -- sending ----------------------------------------------------------------------------

    @staticmethod
    async def _send(
        ws: web.WebSocketResponse, op: int, d: Any, t: str | None = None, s: int | None = None
    ) -> None:
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await ws.send_str(json.dumps({"op": op, "d": d, "s": s, "t": t}))

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        self.close_codes.append(code)
        if conn.session is not None and code in (4009,):
            conn.session.resumable = False
        await self.close_socket(conn.ws, code, reason)

    async def close_socket(self, ws: web.WebSocketResponse, code: int, reason: str = "") -> None:
        """Close from this side (the client's answering close frame does not end the session)."""
        self._closed_here.add(ws)
        await ws.close(code=code, message=reason.encode())

    async def dispatch(self, event: str, data: dict[str, Any]) -> bool:
        """Send ``event`` to the bot's session if its intents ask for it; kept for a resume
        while the socket is down. Returns whether it went out on a live socket."""
        s = self.session
        if s is None or not s.resumable or not s.wants(event, data):
            return False
        if (
            event in ("MESSAGE_CREATE", "MESSAGE_UPDATE")
            and not s.intents & INTENTS["message_content"]
        ):
            data = self._without_content(data)
        s.seq += 1
        text = json.dumps({"op": 0, "d": data, "s": s.seq, "t": event})
        s.backlog.append((s.seq, text))
        if s.ws is None or s.ws.closed:
            return False
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await s.ws.send_str(text)
            self.server.delivered(event)
            return True
        return False

    def _without_content(self, data: dict[str, Any]) -> dict[str, Any]:
        """Discord empties content fields unless the bot wrote the message, it is a DM, or
        it mentions the bot."""
        author = (data.get("author") or {}).get("id")
        mentioned = any(u.get("id") == author for u in data.get("mentions") or [])
        if author == self.server.bot_user["id"] or "guild_id" not in data or mentioned:
            return data
        return {**data, **CONTENT_FIELDS}

    # -- what tests do ------------------------------------------------------------------------

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs (events meanwhile are replayed)."""
        s = self.session
        assert s is not None and s.ws is not None, "no bot is connected"
        self.ready.clear()
        await self._send(s.ws, 7, None)

    async def drop(self, *, resumable: bool = True) -> None:
        """Close the socket as a network failure would; ``resumable=False`` also expires the
        session, so the client's RESUME gets INVALID_SESSION and it identifies anew."""
        self.ready.clear()
        s = self.session
        if s is None:
            return
        s.resumable = resumable
        if s.ws is not None:
            await self.close_socket(s.ws, 4000)

    # -- the socket ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = _Connection(ws, time.monotonic())
        await self._send(ws, 10, {"heartbeat_interval": round(self.heartbeat_interval * 1000)})
        watchdog = asyncio.get_running_loop().create_task(self._watch(conn))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    await self._close(conn, 4002, "Error while decoding payload.")
                    break
                try:
                    payload = json.loads(msg.data)
                    op, d = int(payload["op"]), payload.get("d")
                except (ValueError, KeyError, TypeError):
                    await self._close(conn, 4002, "Error while decoding payload.")
                    break
                await self._on_op(conn, op, d)
                if ws.closed:
                    break
        finally:
            watchdog.cancel()
            s = conn.session
            if s is not None and s.ws is ws:
                s.ws = None
                if ws.close_code in (1000, 1001) and ws not in self._closed_here:
                    # the client closed cleanly: on Discord that ends the session
                    s.resumable = False
                if self.session is s:
                    self.ready.clear()
        return ws

    async def _watch(self, conn: _Connection) -> None:
        """Drop a client that stopped heartbeating (Discord's zombie-connection rule)."""
        grace = self.heartbeat_interval * 1.5
        while not conn.ws.closed:
            await asyncio.sleep(min(self.heartbeat_interval / 4, 5.0))
            if time.monotonic() - conn.last_beat <= grace or conn.ws.closed:
                continue
            # A loop that was blocked wakes this timer and the socket's reader together: let
            # a heartbeat that is already waiting in the socket be read first.
            await asyncio.sleep(min(self.heartbeat_interval / 4, 0.5))
            if time.monotonic() - conn.last_beat > grace and not conn.ws.closed:
                logger.info("gateway: no heartbeat for %.1f s; closing 4009", grace)
                await self._close(conn, 4009, "Session timed out.")
                return

    async def _on_op(self, conn: _Connection, op: int, d: Any) -> None:
        if op == 1:
            conn.last_beat = time.monotonic()
            s = conn.session
            if s is not None and isinstance(d, int):
                while s.backlog and s.backlog[0][0] <= d:  # acknowledged: no replay needed
                    s.backlog.popleft()
            await self._send(conn.ws, 11, None)
        elif op == 2:
            await self._identify(conn, d or {})
        elif op == 6:
            await self._resume(conn, d or {})
        elif op in (3, 4, 8) and conn.session is None:
            await self._close(conn, 4003, "Not authenticated.")
        elif op == 8:
            await self._request_members(conn, d or {})
        elif op in (3, 4):
            return  # presence and voice state: accepted, nothing to tell
        else:
            await self._close(conn, 4001 if conn.session else 4003, "Unknown opcode.")

    async def _identify(self, conn: _Connection, d: dict[str, Any]) -> None:
        if conn.session is not None:
            await self._close(conn, 4005, "Already authenticated.")
            return
        if not self.server.token_ok(d.get("token")):
            await self._close(conn, 4004, "Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~ALL_INTENTS:
            await self._close(conn, 4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await self._close(conn, 4014, "Disallowed intent(s).")
            return
        old = self.session
        if old is not None and old.ws is not None and not old.ws.closed:
            await self.close_socket(old.ws, 4000)  # one shard: a new session replaces the old
        session = GatewaySession("session-" + snowflake(), intents, ws=conn.ws)
        conn.session = self.session = session
        self.server.identifies += 1
        self.server.session_reactions = 0
        await self.dispatch("READY", self.server.ready_payload(session.id))
        for guild in self.server.guild_payloads():
            await self.dispatch("GUILD_CREATE", guild)
        self.ready.set()

    async def _resume(self, conn: _Connection, d: dict[str, Any]) -> None:
        if conn.session is not None:
            await self._close(conn, 4005, "Already authenticated.")
            return
        if not self.server.token_ok(d.get("token")):
            await self._close(conn, 4004, "Authentication failed.")
            return
        s = self.session
        seq = d.get("seq")
        missed_from = s.backlog[0][0] if s is not None and s.backlog else None
        if (
            s is None
            or not s.resumable
            or d.get("session_id") != s.id
            or not isinstance(seq, int)
            or seq > s.seq
            or (missed_from is not None and seq < missed_from - 1)
        ):
            await self._send(conn.ws, 9, False)  # INVALID_SESSION, not resumable
            return
        if s.ws is not None and not s.ws.closed and s.ws is not conn.ws:
            await self.close_socket(s.ws, 4000)
        conn.session = s
        sent = seq
        while True:  # events dispatched during the replay are replayed too, in order
            pending = [(n, text) for n, text in s.backlog if n > sent]
            if not pending:
                break
            for n, text in pending:
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await conn.ws.send_str(text)
                    self.server.delivered(json.loads(text)["t"])
                sent = n
        s.ws = conn.ws
        self.server.resumes += 1
        await self.dispatch("RESUMED", {})
        self.ready.set()

    async def _request_members(self, conn: _Connection, d: dict[str, Any]) -> None:
        s = conn.session
        assert s is not None
        query, limit = d.get("query"), int(d.get("limit") or 0)
        user_ids = d.get("user_ids")
        if user_ids is None and not query and not s.intents & INTENTS["guild_members"]:
            await self._close(conn, 4013, "Invalid intent(s).")  # the whole list is privileged
            return
        guild_id = int(d.get("guild_id") or 0)
        members = self.server.members_of(guild_id)
        if user_ids is not None:
            wanted = {int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}
            found = [m for m in members if int(m["user"]["id"]) in wanted]
            not_found = sorted(wanted - {int(m["user"]["id"]) for m in found})
        else:
            prefix = str(query or "").lower()
            found = [m for m in members if m["user"]["username"].lower().startswith(prefix)]
            not_found = []
        if limit:
            found = found[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": found,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(u) for u in not_found],
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
