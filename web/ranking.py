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
import logging
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

logger = logging.getLogger(__name__)

#: Rows read at a time while a ranking is computed.
SLICE = 5000

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
        self._refreshing: dict[tuple[int, str], asyncio.Task[None]] = {}

    async def _cached(self, key: tuple[int, str], ttl: float, compute: Any) -> Ranking:
        """The ranking under ``key``: the first one is waited for; after that an old one is
        served while one refresh runs in the background (a page never waits for a
        recomputation, and there is one at a time)."""
        ranking = self._rankings.get(key)
        if ranking is not None:
            if time.monotonic() - ranking.made_at >= ttl and key not in self._refreshing:
                self._refreshing[key] = asyncio.create_task(self._refresh(key, compute))
            return ranking
        async with self._locks.setdefault(key, asyncio.Lock()):
            ranking = self._rankings.get(key)
            if ranking is None:
                ranking = self._rankings[key] = await compute()
            return ranking

    async def _refresh(self, key: tuple[int, str], compute: Any) -> None:
        try:
            self._rankings[key] = await compute()
        except Exception:  # the old ranking stays; the next page tries again
            logger.exception("gallery ranking %s: refresh failed", key)
        finally:
            del self._refreshing[key]

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
        means = (
            counted_ratings(
                Rating.image_id.label("image_id"),
                func.avg(Rating.value).label("mean"),
                leaving=True,
                guilds=[guild_id],
            )
            .group_by(Rating.image_id)
            .subquery()
        )
        # Ordered by the database; read in slices so that other requests run in between.
        ordered = (
            select(Image.id, means.c.mean)
            .join(Job, Job.id == Image.job_id)
            .outerjoin(means, means.c.image_id == Image.id)
            .where(shown)  # type: ignore[arg-type]
            .order_by(means.c.mean.desc().nulls_last(), Image.id.desc())
        )
        ids: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        async with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                # asyncpg builds the 100k rows in C: far less time on this event loop than
                # SQLAlchemy's rows would take. Only ids and literal flags go in the SQL.
                sql = str(
                    ordered.compile(
                        dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}
                    )
                )
                raw = (await conn.get_raw_connection()).driver_connection
                records = await raw.fetch(sql)  # type: ignore[union-attr]
                return Ranking(
                    np.fromiter((r[0] for r in records), dtype=np.int64, count=len(records)),
                    np.fromiter(
                        (UNRATED if r[1] is None else r[1] for r in records),
                        dtype=np.float64,
                        count=len(records),
                    ),
                    time.monotonic(),
                )
            result = await conn.stream(ordered.execution_options(yield_per=SLICE))
            async for part in result.partitions(SLICE):
                ids.append(np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part)))
                scores.append(
                    np.fromiter(
                        (UNRATED if r[1] is None else float(r[1]) for r in part),
                        dtype=np.float64,
                        count=len(part),
                    )
                )
                await asyncio.sleep(0)
        if not ids:
            return Ranking(np.empty(0, np.int64), np.empty(0), time.monotonic())
        return Ranking(np.concatenate(ids), np.concatenate(scores), time.monotonic())
