"""Posting exactly once, in one room: the intent before the message, the message after, and
the bookkeeping of delivering jobs to Discord.

Discord has no transaction with the database. Writing the intent (with a nonce that goes
into the attachment's name) before sending, and clearing it in the same transaction that
records the message, means a crash in between leaves an intent behind: whoever retries
looks the message up by its nonce instead of posting the image a second time.

Every message that shows an image is recorded here: its own message (:meth:`PostRepository.
record_own`; reactions on it rate it), a repost by ``/rate`` or the feed, and a comparison
of two (``/compare``, the feed, an arena round). The bot's publisher
(:class:`dreamrate.bot.publisher.Publisher`) is the one that sends them.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlalchemy.orm import aliased

from dreamrate.db.models import ComparisonPost, Image, ImagePost, Job, JobStatus, PendingPost
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert
from dreamrate.ratings.policy import counted_image
from dreamrate.ratings.service import WEB_SOURCE

__all__ = [
    "COMPARISON_KINDS",
    "OWN",
    "WEB_KIND",
    "Intent",
    "PostRepository",
    "record_comparison",
]

#: The ``kind`` of posts that exist only in the database: what the web home showed
#: (:mod:`dreamrate.community.web_ratings`).
WEB_KIND = WEB_SOURCE
#: The intent kind of an image's own message (its job's delivery).
OWN = "own"
#: A comparison intent's kind -> the kind of the comparison post it becomes.
COMPARISON_KINDS = {"compare": "compare", "feed_compare": "feed", "arena": "arena"}

_NO_TOKEN = {"interaction_token": None, "interaction_token_expires_at": None}


@dataclass(frozen=True, slots=True)
class Intent:
    """A post about to be made: what it shows, where, and the nonce it carries.

    ``kind`` is :data:`OWN`, a repost's (``rate``, ``feed``) or a comparison's
    (``compare``, ``feed_compare``, ``arena``: ``other_image_id`` is the right image)."""

    nonce: str
    image_id: int
    other_image_id: int | None
    channel_id: int
    kind: str
    created_at: datetime


async def record_comparison(
    engine: AsyncEngine,
    *,
    message_id: int,
    pair: tuple[int, int],
    channel_id: int,
    kind: str,
    nonce: str | None = None,
) -> None:
    """Remember that ``message_id`` compares ``pair`` (left, right); ``kind``: ``compare``,
    ``feed`` or ``arena``. Clears the intent with ``nonce`` in the same transaction;
    idempotent."""
    async with engine.begin() as conn:
        await _clear(conn, nonce)
        # Both images come from one guild's pool: the left one's job says which.
        guild_id = await conn.scalar(
            select(Job.guild_id).join(Image, Image.job_id == Job.id).where(Image.id == pair[0])
        )
        await conn.execute(
            dialect_insert(engine)(ComparisonPost)
            .values(
                message_id=message_id,
                image_a_id=pair[0],
                image_b_id=pair[1],
                channel_id=channel_id,
                guild_id=guild_id,
                kind=kind,
                posted_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
        )


async def _clear(conn: AsyncConnection, nonce: str | None) -> None:
    """Inside the transaction that records the message: the intent is fulfilled."""
    if nonce is not None:
        await conn.execute(delete(PendingPost).where(PendingPost.nonce == nonce))


class PostRepository:
    """The SQL of posting: intents, the posts themselves, and jobs' deliveries.

    Parameters
    ----------
    engine
        Async engine (SQLite or PostgreSQL).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._read = async_sessionmaker(engine, expire_on_commit=False)

    # -- intents ------------------------------------------------------------------------

    async def intent(
        self, image_id: int, channel_id: int, kind: str, *, other_image_id: int | None = None
    ) -> Intent | None:
        """The unfinished post of ``image_id`` (beside ``other_image_id``, for a comparison)
        of ``kind`` in ``channel_id``, if any."""
        other = (
            PendingPost.other_image_id.is_(None)
            if other_image_id is None
            else PendingPost.other_image_id == other_image_id
        )
        async with self.engine.connect() as conn:
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
        if row is None:
            return None
        return Intent(row.nonce, image_id, other_image_id, channel_id, kind, row.created_at)

    async def own_message(self, image_id: int) -> int | None:
        """The message ``image_id`` was posted as, once recorded."""
        async with self.engine.connect() as conn:
            found = await conn.scalar(select(Image.discord_message_id).where(Image.id == image_id))
        return None if found is None else int(found)

    async def begin(
        self, image_id: int, channel_id: int, kind: str, *, other_image_id: int | None = None
    ) -> Intent:
        """Record the intent to post ``image_id`` (beside ``other_image_id``, for a
        comparison) before sending it; its nonce names the attachment."""
        intent = Intent(secrets.token_hex(6), image_id, other_image_id, channel_id, kind, utcnow())
        async with self.engine.begin() as conn:
            await conn.execute(
                PendingPost.__table__.insert().values(
                    nonce=intent.nonce,
                    image_id=image_id,
                    other_image_id=other_image_id,
                    channel_id=channel_id,
                    kind=kind,
                    created_at=intent.created_at,
                )
            )
        return intent

    async def retry(self, nonce: str) -> None:
        """An unfinished post is about to be tried again: it is searched for from now on."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(PendingPost).where(PendingPost.nonce == nonce).values(created_at=utcnow())
            )

    async def drop(self, nonce: str) -> None:
        """The intent was never carried out: forget it."""
        async with self.engine.begin() as conn:
            await _clear(conn, nonce)

    async def unfinished(
        self,
        *,
        channel_id: int | None = None,
        before: datetime | None = None,
        kinds: Collection[str] | None = None,
    ) -> list[Intent]:
        """Intents not carried out (in ``channel_id``, made before ``before``, of ``kinds``),
        oldest first."""
        query = select(
            PendingPost.nonce,
            PendingPost.image_id,
            PendingPost.other_image_id,
            PendingPost.channel_id,
            PendingPost.kind,
            PendingPost.created_at,
        ).order_by(PendingPost.created_at)
        if channel_id is not None:
            query = query.where(PendingPost.channel_id == channel_id)
        if before is not None:
            query = query.where(PendingPost.created_at < before)
        if kinds is not None:
            query = query.where(PendingPost.kind.in_(sorted(kinds)))
        async with self.engine.connect() as conn:
            return [Intent(*row) for row in await conn.execute(query)]

    # -- what was posted (each clears its intent in the same transaction) ---------------

    async def record(self, intent: Intent, message_id: int) -> None:
        """``message_id`` carried out ``intent``: recorded as what its kind makes it."""
        if intent.kind == OWN:
            await self.record_own(
                intent.image_id,
                message_id=message_id,
                channel_id=intent.channel_id,
                nonce=intent.nonce,
            )
        elif intent.other_image_id is not None:
            await record_comparison(
                self.engine,
                message_id=message_id,
                pair=(intent.image_id, intent.other_image_id),
                channel_id=intent.channel_id,
                kind=COMPARISON_KINDS.get(intent.kind, "feed"),
                nonce=intent.nonce,
            )
        else:
            await self.record_repost(
                message_id=message_id,
                image_id=intent.image_id,
                channel_id=intent.channel_id,
                kind=intent.kind,
                nonce=intent.nonce,
            )

    async def record_own(
        self, image_id: int, *, message_id: int, channel_id: int, nonce: str | None = None
    ) -> None:
        """Record the message an image was posted as (reactions on it rate the image)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(Image)
                .where(Image.id == image_id)
                .values(discord_message_id=message_id, discord_channel_id=channel_id)
            )
            await _clear(conn, nonce)

    async def record_repost(
        self,
        *,
        message_id: int,
        image_id: int,
        channel_id: int,
        kind: str,
        nonce: str | None = None,
    ) -> None:
        """Remember that ``message_id`` shows ``image_id`` again (``kind``: ``rate``,
        ``feed``, or :data:`WEB_KIND`); idempotent."""
        async with self.engine.begin() as conn:
            await _clear(conn, nonce)
            # Idempotent: a retry after a commit whose reply was lost finds the row there.
            await conn.execute(
                dialect_insert(self.engine)(ImagePost)
                .values(
                    message_id=message_id,
                    image_id=image_id,
                    channel_id=channel_id,
                    kind=kind,
                    posted_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["message_id"])
            )

    # -- reads --------------------------------------------------------------------------

    async def image(self, image_id: int) -> Image | None:
        """One image row (detached; its columns stay readable)."""
        async with self._read() as session:
            return await session.get(Image, image_id)

    async def feed_mix(self, channel_id: int, last: int = 10) -> tuple[datetime | None, list[bool]]:
        """The feed of ``channel_id``: when it last posted (either kind), and whether each of
        its ``last`` most recent posts was a comparison (newest first)."""
        async with self.engine.connect() as conn:
            singles = await conn.execute(
                select(ImagePost.posted_at)
                .where(ImagePost.channel_id == channel_id, ImagePost.kind == "feed")
                .order_by(ImagePost.posted_at.desc())
                .limit(last)
            )
            posts = [(t, False) for t in singles.scalars()]
            pairs = await conn.execute(
                select(ComparisonPost.posted_at)
                .where(ComparisonPost.channel_id == channel_id, ComparisonPost.kind == "feed")
                .order_by(ComparisonPost.posted_at.desc())
                .limit(last)
            )
            posts += [(t, True) for t in pairs.scalars()]
        posts.sort(key=lambda p: p[0], reverse=True)
        return (posts[0][0] if posts else None), [pair for _, pair in posts[:last]]

    async def recent_posts(
        self, channel_id: int, image_ids: list[int], since: datetime
    ) -> dict[int, int]:
        """Image id -> the newest repost message of it in ``channel_id`` since ``since``."""
        if not image_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(ImagePost.image_id, func.max(ImagePost.message_id))
                .where(
                    ImagePost.channel_id == channel_id,
                    ImagePost.image_id.in_(image_ids),
                    ImagePost.posted_at >= since,
                )
                .group_by(ImagePost.image_id)
            )
            return {int(i): int(m) for i, m in rows}

    async def recent_image_messages(self, since: datetime) -> list[tuple[int, int]]:
        """``(message id, channel id)`` of every Discord message since ``since`` that shows a
        kept image (comparison posts of two kept images included): what backfill re-reads."""
        own = select(Image.discord_message_id, Image.discord_channel_id).where(
            Image.discord_message_id.is_not(None),
            counted_image(leaving=False),
            Image.created_at >= since,
        )
        reposts = (
            select(ImagePost.message_id, ImagePost.channel_id)
            .join(Image, Image.id == ImagePost.image_id)
            .where(
                counted_image(leaving=False),
                ImagePost.posted_at >= since,
                ImagePost.kind != WEB_KIND,  # only in the database: nothing to re-read
            )
        )
        left, right = aliased(Image), aliased(Image)
        pairs = (
            select(ComparisonPost.message_id, ComparisonPost.channel_id)
            .join(left, left.id == ComparisonPost.image_a_id)
            .join(right, right.id == ComparisonPost.image_b_id)
            .where(
                left.removed.is_(False),
                right.removed.is_(False),
                ComparisonPost.posted_at >= since,
                ComparisonPost.kind != WEB_KIND,
            )
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(own.union_all(reposts, pairs))
            return [(int(m), int(c)) for m, c in rows]

    async def arena_post(self, left_image: int, right_image: int) -> int | None:
        """The arena post of this pair, if one was recorded (by a recovery after a crash)."""
        async with self.engine.connect() as conn:
            return await conn.scalar(
                select(ComparisonPost.message_id).where(
                    ComparisonPost.image_a_id == left_image,
                    ComparisonPost.image_b_id == right_image,
                    ComparisonPost.kind == "arena",
                )
            )

    # -- deliveries: which finished jobs still owe Discord their images -----------------

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
