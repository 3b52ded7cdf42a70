"""Logins kept in the database, so that ending one holds in every web process and after a
restart: a signed cookie cannot be taken back from a browser, but the row it names can end.

The cookie carries a random session id; the table keeps only its SHA-256. A session counts
while its row exists, has not ended (logging out, or an erase on the web, ends it) and has
not expired, and while its member was neither erased nor banned (in any server, or
everywhere) since the login: an erase with ``/privacy`` or a ban with ``/admin`` on Discord
ends it as well as one on the web.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from dreamrate.db.models import GuildBan, User, WebSession
from dreamrate.db.types import utcnow

__all__ = [
    "SessionGate",
    "banned_everywhere",
    "end_member_sessions",
    "end_session",
    "record_login",
    "session_alive",
]

logger = logging.getLogger(__name__)

_DISCORD_ID = re.compile(r"[0-9]{1,19}")


def _key(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


async def record_login(
    engine: AsyncEngine, sid: str, discord_id: int, at: datetime, lifetime: timedelta
) -> None:
    """Keep the new session ``sid`` of ``discord_id`` (and forget the expired ones)."""
    async with engine.begin() as conn:
        await conn.execute(delete(WebSession).where(WebSession.expires_at < at))
        await conn.execute(
            insert(WebSession).values(
                id=_key(sid), discord_id=discord_id, created_at=at, expires_at=at + lifetime
            )
        )


async def end_session(engine: AsyncEngine, sid: str) -> None:
    """End the session ``sid`` (logging out)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(WebSession)
            .where(WebSession.id == _key(sid), WebSession.ended_at.is_(None))
            .values(ended_at=utcnow())
        )


async def end_member_sessions(engine: AsyncEngine, discord_id: int) -> None:
    """End every session of ``discord_id``, in every browser."""
    async with engine.begin() as conn:
        await conn.execute(
            update(WebSession)
            .where(WebSession.discord_id == discord_id, WebSession.ended_at.is_(None))
            .values(ended_at=utcnow())
        )


async def session_alive(engine: AsyncEngine, sid: str, discord_id: int) -> bool:
    """Whether the session ``sid`` of ``discord_id`` still counts (see the module)."""
    since_login = exists().where(
        User.discord_id == WebSession.discord_id,
        or_(
            User.banned.is_(True),
            User.erased_at >= WebSession.created_at,
            exists()
            .where(GuildBan.user_id == User.id, GuildBan.created_at >= WebSession.created_at)
            .correlate_except(GuildBan),  # the session and member of the outer queries
        ),
    )
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(WebSession.id).where(
                WebSession.id == _key(sid),
                WebSession.discord_id == discord_id,
                WebSession.ended_at.is_(None),
                WebSession.expires_at > utcnow(),
                ~since_login,
            )
        )
    return found is not None


async def banned_everywhere(engine: AsyncEngine, discord_id: int) -> bool:
    """Whether the member is banned in every server (no session of theirs would count)."""
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(User.id).where(User.discord_id == discord_id, User.banned.is_(True))
        )
    return found is not None


class SessionGate:
    """Clears the session of a request whose login no longer counts (inside Starlette's
    ``SessionMiddleware``, so the browser's cookie is dropped too). Static files need no
    login and are not checked."""

    def __init__(self, app: ASGIApp, engine: AsyncEngine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("session")
        if (
            scope["type"] == "http"
            and session
            and "uid" in session
            and not scope["path"].startswith("/static/")
        ):
            uid, sid = session.get("uid"), session.get("sid")
            alive = (
                isinstance(uid, str)
                and _DISCORD_ID.fullmatch(uid) is not None
                and int(uid) < 2**63
                and isinstance(sid, str)
                and await session_alive(self.engine, sid, int(uid))
            )
            if not alive:
                session.clear()
        await self.app(scope, receive, send)
