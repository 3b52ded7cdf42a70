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
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.aesthetic.predictor import Predictor, PredictorError
from dreamrate.db.models import Embedding, Image, Job, Rating
from dreamrate.ratings.policy import counted_ratings

__all__ = ["Ranking", "RankingCache"]

#: Sort key of images nobody has rated yet: below every rating.
UNRATED = float("-inf")
#: Sort key of images without an embedding, by predicted score: below every prediction.
UNEMBEDDED = float("-inf")


@dataclass(frozen=True)
class Ranking:
    """A guild's shown images, best first: ``scores`` descending, then ``ids`` descending."""

    ids: np.ndarray
    scores: np.ndarray
    made_at: float

    def position_after(self, score: float, image_id: int) -> int:
        """Index of the first entry strictly after ``(score, image_id)`` in the order."""
        # Order key ascending: (-score, -id); find the first key > (-score, -image_id).
        keys_score = -self.scores
        lo = int(np.searchsorted(keys_score, -score, side="left"))
        hi = int(np.searchsorted(keys_score, -score, side="right"))
        within = -self.ids[lo:hi]
        return lo + int(np.searchsorted(within, -image_id, side="right"))


class RankingCache:
    """One :class:`Ranking` per guild (and per predictor, for "predicted"), refreshed when
    older than ``ttl`` seconds (``predicted_ttl``: embeddings arrive in batches)."""

    def __init__(
        self, engine: AsyncEngine, ttl: float = 30.0, predicted_ttl: float = 300.0
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.predicted_ttl = predicted_ttl
        self._rankings: dict[tuple[int, str], Ranking] = {}
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._models: dict[int, tuple[float, tuple[str, ...]]] = {}

    async def _cached(self, key: tuple[int, str], ttl: float, compute: Any) -> Ranking:
        ranking = self._rankings.get(key)
        if ranking is not None and time.monotonic() - ranking.made_at < ttl:
            return ranking
        async with self._locks.setdefault(key, asyncio.Lock()):
            # One refresh at a time; the others take its result.
            ranking = self._rankings.get(key)
            if ranking is not None and time.monotonic() - ranking.made_at < ttl:
                return ranking
            ranking = await compute()
            self._rankings[key] = ranking
            return ranking

    async def get(self, guild_id: int, shown: object) -> Ranking:
        """The guild's ranking by community rating; ``shown`` is the gallery's condition on
        Image joined to Job."""
        return await self._cached(
            (guild_id, "top"), self.ttl, lambda: self._compute(guild_id, shown)
        )

    async def models(self, guild_id: int) -> tuple[str, ...]:
        """The models the guild's images were made with (the gallery's filter)."""
        cached = self._models.get(guild_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Job.model).where(Job.guild_id == guild_id).distinct().order_by(Job.model)
            )
            models = tuple(str(m) for m in rows.scalars())
        self._models[guild_id] = (time.monotonic(), models)
        return models

    async def predicted(self, guild_id: int, shown: object, predictor: Predictor) -> Ranking:
        """The guild's ranking by ``predictor``'s score of each image's embedding (images
        not embedded yet last)."""
        return await self._cached(
            (guild_id, f"predicted:{predictor.id}"),
            self.predicted_ttl,
            lambda: self._compute_predicted(guild_id, shown, predictor),
        )

    async def _compute_predicted(
        self, guild_id: int, shown: object, predictor: Predictor
    ) -> Ranking:
        async with self.engine.connect() as conn:
            ids = np.fromiter(
                (
                    await conn.execute(
                        select(Image.id).join(Job, Job.id == Image.job_id).where(shown)  # type: ignore[arg-type]
                    )
                ).scalars(),
                dtype=np.int64,
            )
            rows = (
                await conn.execute(
                    select(Embedding.image_id, Embedding.vector)
                    .join(Image, Image.id == Embedding.image_id)
                    .join(Job, Job.id == Image.job_id)
                    .where(shown, Embedding.model == predictor.embedding_model)  # type: ignore[arg-type]
                )
            ).all()
        scores = np.full(len(ids), UNEMBEDDED)
        if rows:
            vectors = np.frombuffer(b"".join(r.vector for r in rows), dtype=np.float32)
            try:
                predicted = await asyncio.to_thread(
                    predictor.predict, vectors.reshape(len(rows), -1)
                )
            except PredictorError:
                predicted = None  # another embedding size: nothing to sort by
            if predicted is not None:
                where = {int(r.image_id): float(v) for r, v in zip(rows, predicted, strict=True)}
                scores = np.array([where.get(int(i), UNEMBEDDED) for i in ids])
        order = np.lexsort((-ids, -scores))
        return Ranking(ids[order], scores[order], time.monotonic())

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
        scores = np.array([float(rated.get(int(i), UNRATED)) for i in ids], dtype=np.float64)
        order = np.lexsort((-ids, -scores))  # by score descending, then id descending
        return Ranking(ids[order], scores[order], time.monotonic())
