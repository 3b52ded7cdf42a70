"""Which images to show for rating next (until a predictor exists: fewest ratings first)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Rating

__all__ = ["images_needing_ratings"]


async def images_needing_ratings(engine: AsyncEngine, count: int) -> list[int]:
    """Ids of up to ``count`` posted images with the fewest ratings (newest first among equals).

    Removed and flagged images are never shown.
    """
    ratings = select(Rating.image_id, func.count().label("n")).group_by(Rating.image_id).subquery()
    query = (
        select(Image.id)
        .outerjoin(ratings, ratings.c.image_id == Image.id)
        .where(
            Image.removed.is_(False),
            Image.flagged.is_(False),
            Image.discord_message_id.is_not(None),
        )
        .order_by(func.coalesce(ratings.c.n, 0), Image.created_at.desc(), Image.id.desc())
        .limit(count)
    )
    async with engine.connect() as conn:
        return list((await conn.execute(query)).scalars())
