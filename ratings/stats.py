"""Rating statistics for /stats: a member's count and distribution, server totals, top raters."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Job, Rating, User
from dreamrate.ratings.policy import counted_image, counted_ratings

__all__ = ["RatingStats", "rating_stats"]


@dataclass(frozen=True, slots=True)
class RatingStats:
    mine: int
    distribution: dict[float, int]  #: my ratings by value
    total_ratings: int
    total_images: int
    raters: int
    top: list[tuple[str, int]]  #: (name, ratings), most first


async def rating_stats(
    engine: AsyncEngine, discord_id: int, guild_id: int, *, top: int = 5
) -> RatingStats:
    """A member's ratings of ``guild_id``'s images, that guild's totals and its ``top`` raters.

    Only ratings that count (:mod:`dreamrate.ratings.policy`) are shown.
    """
    async with engine.connect() as conn:
        distribution = {
            float(value): count
            for value, count in (
                await conn.execute(
                    counted_ratings(Rating.value, func.count(), leaving=False, guilds=[guild_id])
                    .where(User.discord_id == discord_id)
                    .group_by(Rating.value)
                    .order_by(Rating.value)
                )
            ).all()
        }
        total, raters = (
            await conn.execute(
                counted_ratings(
                    func.count(),
                    func.count(func.distinct(Rating.user_id)),
                    leaving=False,
                    guilds=[guild_id],
                )
            )
        ).one()
        images = (
            await conn.scalar(
                select(func.count())
                .select_from(Image)
                .join(Job, Job.id == Image.job_id)
                .where(
                    counted_image(leaving=False),
                    Image.discord_message_id.is_not(None),
                    Job.guild_id == guild_id,
                )
            )
            or 0
        )
        leaders = (
            await conn.execute(
                counted_ratings(User.name, func.count(Rating.id), leaving=False, guilds=[guild_id])
                .group_by(User.id, User.name)
                .order_by(func.count(Rating.id).desc(), User.name)
                .limit(top)
            )
        ).all()
    return RatingStats(
        sum(distribution.values()),
        distribution,
        total or 0,
        images,
        raters or 0,
        [(n, c) for n, c in leaders],
    )
