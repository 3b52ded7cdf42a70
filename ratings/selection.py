"""Which images to show for rating next (until a predictor exists: fewest ratings first)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Subquery, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Rating
from dreamrate.ratings.policy import counted_image, counted_ratings

__all__ = ["images_needing_ratings", "rating_counts", "shown_for_rating"]


def rating_counts() -> Subquery:
    """``(image_id, n)``: how many counted ratings each rated image has."""
    return (
        counted_ratings(Rating.image_id, func.count().label("n"), leaving=False)
        .group_by(Rating.image_id)
        .subquery()
    )


def shown_for_rating() -> ColumnElement[bool]:
    """Images that may be shown again: posted once, and counted when they leave the database."""
    return counted_image(leaving=True) & Image.discord_message_id.is_not(None)


async def images_needing_ratings(engine: AsyncEngine, count: int) -> list[int]:
    """Ids of up to ``count`` posted images with the fewest ratings (newest first among equals).

    Removed and flagged images are never shown.
    """
    ratings = rating_counts()
    query = (
        select(Image.id)
        .outerjoin(ratings, ratings.c.image_id == Image.id)
        .where(shown_for_rating())
        .order_by(func.coalesce(ratings.c.n, 0), Image.created_at.desc(), Image.id.desc())
        .limit(count)
    )
    async with engine.connect() as conn:
        return list((await conn.execute(query)).scalars())
