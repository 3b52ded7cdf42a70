"""Which images to show for rating next (until a predictor exists: fewest ratings first)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Subquery, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Job, Rating
from dreamrate.ratings.policy import counted_image, counted_ratings

__all__ = ["images_needing_ratings", "rating_counts", "shown_for_rating"]


def rating_counts(guild_id: int) -> Subquery:
    """``(image_id, n)``: how many counted ratings each rated image of ``guild_id`` has."""
    return (
        counted_ratings(Rating.image_id, func.count().label("n"), leaving=False, guilds=[guild_id])
        .group_by(Rating.image_id)
        .subquery()
    )


def shown_for_rating(guild_id: int) -> ColumnElement[bool]:
    """Images (joined to their ``Job``) that may be shown again in ``guild_id``: made there,
    posted once, and counted when they leave the database."""
    return (
        counted_image(leaving=True)
        & Image.discord_message_id.is_not(None)
        & (Job.guild_id == guild_id)
    )


async def images_needing_ratings(engine: AsyncEngine, count: int, guild_id: int) -> list[int]:
    """Ids of up to ``count`` of ``guild_id``'s posted images with the fewest ratings (newest
    first among equals). Removed and flagged images are never shown; other guilds' never."""
    ratings = rating_counts(guild_id)
    query = (
        select(Image.id)
        .join(Job, Job.id == Image.job_id)
        .outerjoin(ratings, ratings.c.image_id == Image.id)
        .where(shown_for_rating(guild_id))
        .order_by(func.coalesce(ratings.c.n, 0), Image.created_at.desc(), Image.id.desc())
        .limit(count)
    )
    async with engine.connect() as conn:
        return list((await conn.execute(query)).scalars())
