"""Which images to show for rating next until a predictor exists: fewest ratings first,
newest first among equals. The one order and the one rule of what may be shown, for
``/rate``, the feed and the web home's rating page alike."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Subquery, exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Job, Rating
from dreamrate.ratings.policy import counted_ratings, shown_in_guild

__all__ = ["images_needing_ratings", "not_rated_by", "rating_counts", "shown_for_rating"]


def rating_counts(guild_id: int) -> Subquery:
    """``(image_id, n)``: how many counted ratings each rated image of ``guild_id`` has."""
    return (
        counted_ratings(Rating.image_id, func.count().label("n"), leaving=False, guilds=[guild_id])
        .group_by(Rating.image_id)
        .subquery()
    )


def shown_for_rating(guild_id: int) -> ColumnElement[bool]:
    """Images (joined to their ``Job``) that may be shown again for rating in ``guild_id``:
    fit to show its members (:func:`~dreamrate.ratings.policy.shown_in_guild`: made there,
    kept, not flagged, no report waiting, not by a member banned there) and posted once
    (an arena's images never are: their round keeps the models' names hidden)."""
    return shown_in_guild(guild_id) & Image.discord_message_id.is_not(None)


def not_rated_by(user_id: int) -> ColumnElement[bool]:
    """On ``Image``: the member (their user row id) has no rating of it."""
    return ~exists().where(Rating.image_id == Image.id, Rating.user_id == user_id)


async def images_needing_ratings(
    engine: AsyncEngine, count: int, guild_id: int, *, unrated_by: int | None = None
) -> list[int]:
    """Ids of up to ``count`` of the images ``guild_id`` may show for rating (none the member
    with row id ``unrated_by`` rated), the fewest ratings first, newest first among equals."""
    ratings = rating_counts(guild_id)
    query = (
        select(Image.id)
        .join(Job, Job.id == Image.job_id)
        .outerjoin(ratings, ratings.c.image_id == Image.id)
        .where(shown_for_rating(guild_id))
        .order_by(func.coalesce(ratings.c.n, 0), Image.created_at.desc(), Image.id.desc())
        .limit(count)
    )
    if unrated_by is not None:
        query = query.where(not_rated_by(unrated_by))
    async with engine.connect() as conn:
        return list((await conn.execute(query)).scalars())
