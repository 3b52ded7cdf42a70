"""The gallery's "best first" order, computed once every little while instead of per page.

Ranking a guild's images by their community rating means aggregating every counted rating
there (a million rows on a big server): far too much for each page a member scrolls. The
order is computed at most every ``ttl`` seconds per guild (one query for the counted
ratings, one for the images fit to show) and kept as sorted arrays; a page is a bisect
into them plus one query for its own rows, which re-checks that each is still shown (a
removal takes effect at once) and reads their current figures. Images made since the
last refresh show up in "newest" at once and in "best" within ``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Job, Rating
from dreamrate.ratings.policy import counted_ratings

__all__ = ["Ranking", "RankingCache"]

#: Sort key of images nobody has rated yet: below every rating.
UNRATED = -1.0


@dataclass(frozen=True)
class Ranking:
    """A guild's shown images, best first: ``scores`` descending, then ``ids`` descending."""

    ids: np.ndarray
    scores: np.ndarray
    made_at: float
    #: The models the guild's images were made with (the gallery's filter), as of then.
    models: tuple[str, ...] = ()

    def position_after(self, score: float, image_id: int) -> int:
        """Index of the first entry strictly after ``(score, image_id)`` in the order."""
        # Order key ascending: (-score, -id); find the first key > (-score, -image_id).
        keys_score = -self.scores
        lo = int(np.searchsorted(keys_score, -score, side="left"))
        hi = int(np.searchsorted(keys_score, -score, side="right"))
        within = -self.ids[lo:hi]
        return lo + int(np.searchsorted(within, -image_id, side="right"))


class RankingCache:
    """One :class:`Ranking` per guild, refreshed when older than ``ttl`` seconds."""

    def __init__(self, engine: AsyncEngine, ttl: float = 30.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._rankings: dict[int, Ranking] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(self, guild_id: int, shown: object) -> Ranking:
        """The guild's ranking; ``shown`` is the gallery's condition on Image joined to Job."""
        ranking = self._rankings.get(guild_id)
        if ranking is not None and time.monotonic() - ranking.made_at < self.ttl:
            return ranking
        lock = self._locks.setdefault(guild_id, asyncio.Lock())
        async with lock:  # one refresh at a time; the others take its result
            ranking = self._rankings.get(guild_id)
            if ranking is not None and time.monotonic() - ranking.made_at < self.ttl:
                return ranking
            ranking = await self._compute(guild_id, shown)
            self._rankings[guild_id] = ranking
            return ranking

    def forget(self, guild_id: int) -> None:
        self._rankings.pop(guild_id, None)

    async def _compute(self, guild_id: int, shown: object) -> Ranking:
        means = counted_ratings(
            Rating.image_id, func.avg(Rating.value), leaving=True, guilds=[guild_id]
        ).group_by(Rating.image_id)
        async with self.engine.connect() as conn:
            rated = {int(i): float(m) for i, m in await conn.execute(means)}
            ids = np.fromiter(
                (
                    await conn.execute(
                        select(Image.id).join(Job, Job.id == Image.job_id).where(shown)  # type: ignore[arg-type]
                    )
                ).scalars(),
                dtype=np.int64,
            )
            models = tuple(
                str(m)
                for m in (
                    await conn.execute(
                        select(Job.model)
                        .where(Job.guild_id == guild_id)
                        .distinct()
                        .order_by(Job.model)
                    )
                ).scalars()
            )
        scores = np.array([float(rated.get(int(i), UNRATED)) for i in ids], dtype=np.float64)
        order = np.lexsort((-ids, -scores))  # by score descending, then id descending
        return Ranking(ids[order], scores[order], time.monotonic(), models)
