"""Messages that show an image for rating: its own message and its reposts (``/rate``, the feed).

Reactions on any of them rate the image; backfill re-reads the recent ones.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from dreamrate.db.models import ComparisonPost, Image, ImagePost, Job
from dreamrate.db.pending import clear_post
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert
from dreamrate.ratings.policy import counted_image

__all__ = [
    "feed_mix",
    "last_post_at",
    "recent_image_messages",
    "recent_pairs",
    "record_comparison",
    "record_post",
]


#: The ``kind`` of posts that exist only in the database: what the web home showed
#: (:mod:`dreamrate.ratings.web_events`).
WEB_KIND = "web"


async def record_post(
    engine: AsyncEngine,
    *,
    message_id: int,
    image_id: int,
    channel_id: int,
    kind: str,
    nonce: str | None = None,
) -> None:
    """Remember that ``message_id`` shows ``image_id`` again (``kind``: ``rate`` or ``feed``),
    clearing the intent with ``nonce`` in the same transaction."""
    async with engine.begin() as conn:
        if nonce is not None:
            await clear_post(conn, nonce)
        # Idempotent: a retry after a commit whose reply was lost finds the row there.
        await conn.execute(
            dialect_insert(engine)(ImagePost)
            .values(
                message_id=message_id,
                image_id=image_id,
                channel_id=channel_id,
                kind=kind,
                posted_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
        )


async def record_comparison(
    engine: AsyncEngine,
    *,
    message_id: int,
    pair: tuple[int, int],
    channel_id: int,
    kind: str,
    nonce: str | None = None,
) -> None:
    """Remember that ``message_id`` compares ``pair`` (left, right); ``kind``: ``compare``
    or ``feed``. Clears the intent with ``nonce`` in the same transaction; idempotent."""
    async with engine.begin() as conn:
        if nonce is not None:
            await clear_post(conn, nonce)
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


async def feed_mix(
    engine: AsyncEngine, channel_id: int, last: int = 10
) -> tuple[datetime | None, list[bool]]:
    """The feed of ``channel_id``: when it last posted (either kind), and whether each of
    its ``last`` most recent posts was a comparison (newest first)."""
    async with engine.connect() as conn:
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


async def recent_pairs(
    engine: AsyncEngine, channel_id: int, since: datetime
) -> set[frozenset[int]]:
    """The pairs compared in ``channel_id`` since ``since``."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ComparisonPost.image_a_id, ComparisonPost.image_b_id).where(
                ComparisonPost.channel_id == channel_id, ComparisonPost.posted_at >= since
            )
        )
        return {frozenset((int(a), int(b))) for a, b in rows}


async def last_post_at(engine: AsyncEngine, channel_id: int, kind: str) -> datetime | None:
    """When ``channel_id`` last got a repost of ``kind``; None if never."""
    async with engine.connect() as conn:
        return await conn.scalar(
            select(func.max(ImagePost.posted_at)).where(
                ImagePost.channel_id == channel_id, ImagePost.kind == kind
            )
        )


async def recent_image_messages(engine: AsyncEngine, since: datetime) -> list[tuple[int, int]]:
    """``(message id, channel id)`` of every message since ``since`` that shows a kept image
    (comparison posts of two kept images included)."""
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
    async with engine.connect() as conn:
        rows = await conn.execute(own.union_all(reposts, pairs))
        return [(int(m), int(c)) for m, c in rows]


async def recent_posts(
    engine: AsyncEngine, channel_id: int, image_ids: list[int], since: datetime
) -> dict[int, int]:
    """Image id -> the newest repost message of it in ``channel_id`` since ``since``."""
    if not image_ids:
        return {}
    async with engine.connect() as conn:
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
