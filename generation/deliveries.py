"""Delivery bookkeeping: which finished jobs still owe Discord their images, and what was posted.

The queue (:mod:`dreamrate.generation.queue`) owns a job's life up to its images; this
repository owns what happens after: the interaction token for follow-ups, the message
each image was posted as, and the moment a job's delivery is complete.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from dreamrate.db.models import Image, Job, JobStatus
from dreamrate.db.pending import clear_post
from dreamrate.db.types import utcnow

__all__ = ["DeliveryRepository"]

_NO_TOKEN = {"interaction_token": None, "interaction_token_expires_at": None}


class DeliveryRepository:
    """The SQL behind delivering jobs to Discord.

    Parameters
    ----------
    engine
        Async engine (SQLite or PostgreSQL).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._read = async_sessionmaker(engine, expire_on_commit=False)

    async def undelivered(self) -> list[int]:
        """Ids of jobs from a channel whose delivery is not complete, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Job.id)
                .where(Job.delivered_at.is_(None), Job.channel_id.is_not(None))
                .order_by(Job.id)
            )
            return list(rows.scalars())

    async def interaction_token(self, job_id: int) -> str | None:
        """The job's interaction token while Discord still accepts it, else None."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(Job.interaction_token, Job.interaction_token_expires_at).where(
                        Job.id == job_id
                    )
                )
            ).one_or_none()
        if row is None or row.interaction_token_expires_at is None:
            return None
        return row.interaction_token if row.interaction_token_expires_at > utcnow() else None

    async def image(self, image_id: int) -> Image | None:
        """One image row (detached; its columns stay readable)."""
        async with self._read() as session:
            return await session.get(Image, image_id)

    async def mark_posted(
        self, image_id: int, *, message_id: int, channel_id: int, nonce: str | None = None
    ) -> None:
        """Record the message an image was posted as (reactions on it rate the image), and
        clear the intent with ``nonce`` in the same transaction."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Image)
                .where(Image.id == image_id)
                .values(discord_message_id=message_id, discord_channel_id=channel_id)
            )
            if nonce is not None:
                await clear_post(conn, nonce)

    async def mark_delivered(self, job_id: int) -> None:
        """The job's delivery is complete: it leaves :meth:`undelivered`, and its interaction
        token (a secret that could post as the bot) is dropped."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Job).where(Job.id == job_id).values(delivered_at=utcnow(), **_NO_TOKEN)
            )

    async def forget_expired_tokens(self) -> int:
        """Drop interaction tokens Discord no longer accepts; the number dropped."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(Job)
                .where(
                    Job.interaction_token.is_not(None), Job.interaction_token_expires_at < utcnow()
                )
                .values(**_NO_TOKEN)
            )
        return result.rowcount or 0

    async def fail_delivery(self, job_id: int, reason: str) -> None:
        """The job's images cannot be posted (the channel is gone, or the bot may not post
        there): it fails with ``reason`` stored and leaves :meth:`undelivered`."""
        now = utcnow()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status=JobStatus.FAILED,
                    error=reason[:2000],
                    delivered_at=now,
                    updated_at=now,
                    **_NO_TOKEN,
                )
            )
