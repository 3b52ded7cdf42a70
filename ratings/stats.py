"""Rating statistics for /stats: a member's count and distribution, server totals, top raters."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Rating, User

__all__ = ["RatingStats", "rating_stats"]


@dataclass(frozen=True, slots=True)
class RatingStats:
    mine: int
    distribution: dict[float, int]  #: my ratings by value
    total_ratings: int
    total_images: int
    raters: int
    top: list[tuple[str, int]]  #: (name, ratings), most first


async def rating_stats(engine: AsyncEngine, discord_id: int, *, top: int = 5) -> RatingStats:
    async with engine.connect() as conn:
        distribution = {
            float(value): count
            for value, count in (
                await conn.execute(
                    select(Rating.value, func.count())
                    .join(User, User.id == Rating.user_id)
                    .where(User.discord_id == discord_id)
                    .group_by(Rating.value)
                    .order_by(Rating.value)
                )
            ).all()
        }
        total = await conn.scalar(select(func.count()).select_from(Rating)) or 0
        images = (
            await conn.scalar(
                select(func.count())
                .select_from(Image)
                .where(Image.removed.is_(False), Image.discord_message_id.is_not(None))
            )
            or 0
        )
        raters = await conn.scalar(select(func.count(func.distinct(Rating.user_id)))) or 0
        leaders = (
            await conn.execute(
                select(User.name, func.count(Rating.id))
                .join(Rating, Rating.user_id == User.id)
                .group_by(User.id, User.name)
                .order_by(func.count(Rating.id).desc(), User.name)
                .limit(top)
            )
        ).all()
    return RatingStats(
        sum(distribution.values()),
        distribution,
        total,
        images,
        raters,
        [(n, c) for n, c in leaders],
    )
