"""Posts recorded before they are made: the intent first, the message id after.

Discord has no transaction with the database. Writing the intent (with a nonce that goes
into the attachment's name) before sending, and clearing it in the same transaction that
records the message, means a crash in between leaves a pending row: whoever retries looks
the message up by its nonce instead of posting the image a second time.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dreamrate.db.models import PendingPost
from dreamrate.db.types import utcnow

__all__ = [
    "PendingIntent",
    "begin_post",
    "clear_post",
    "drop_post",
    "pending_post",
    "pending_reposts",
    "touch_post",
]


class PendingIntent:
    """A post that was about to be made: its nonce and when."""

    __slots__ = ("created_at", "nonce")

    def __init__(self, nonce: str, created_at: datetime) -> None:
        self.nonce, self.created_at = nonce, created_at


async def pending_post(
    engine: AsyncEngine,
    image_id: int,
    channel_id: int,
    kind: str,
    *,
    other_image_id: int | None = None,
) -> PendingIntent | None:
    """The unfinished post of ``image_id`` (beside ``other_image_id``, for a comparison) of
    ``kind`` in ``channel_id``, if any."""
    other = (
        PendingPost.other_image_id.is_(None)
        if other_image_id is None
        else PendingPost.other_image_id == other_image_id
    )
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(PendingPost.nonce, PendingPost.created_at)
                .where(
                    PendingPost.image_id == image_id,
                    other,
                    PendingPost.channel_id == channel_id,
                    PendingPost.kind == kind,
                )
                .order_by(PendingPost.created_at.desc())
                .limit(1)
            )
        ).one_or_none()
    return None if row is None else PendingIntent(row.nonce, row.created_at)


async def begin_post(
    engine: AsyncEngine,
    image_id: int,
    channel_id: int,
    kind: str,
    *,
    other_image_id: int | None = None,
) -> str:
    """Record the intent to post ``image_id`` (beside ``other_image_id``, for a comparison);
    return the nonce to name the attachment by."""
    nonce = secrets.token_hex(6)
    async with engine.begin() as conn:
        await conn.execute(
            PendingPost.__table__.insert().values(
                nonce=nonce,
                image_id=image_id,
                other_image_id=other_image_id,
                channel_id=channel_id,
                kind=kind,
                created_at=utcnow(),
            )
        )
    return nonce


async def clear_post(conn: AsyncConnection, nonce: str) -> None:
    """Inside the transaction that records the message: the intent is fulfilled."""
    await conn.execute(delete(PendingPost).where(PendingPost.nonce == nonce))


async def pending_reposts(
    engine: AsyncEngine,
) -> list[tuple[str, int, int | None, int, str, datetime]]:
    """``(nonce, image id, other image id or None, channel id, kind, created_at)`` of
    unfinished reposts and comparison posts."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                PendingPost.nonce,
                PendingPost.image_id,
                PendingPost.other_image_id,
                PendingPost.channel_id,
                PendingPost.kind,
                PendingPost.created_at,
            ).where(PendingPost.kind != "own")
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def drop_post(engine: AsyncEngine, nonce: str) -> None:
    """The intent was never carried out: forget it."""
    async with engine.begin() as conn:
        await clear_post(conn, nonce)


async def touch_post(engine: AsyncEngine, nonce: str) -> None:
    """An unfinished post is about to be tried again: it is searched for from now on."""
    async with engine.begin() as conn:
        await conn.execute(
            update(PendingPost).where(PendingPost.nonce == nonce).values(created_at=utcnow())
        )
