"""Which images to ask the community to rate next.

Each rating should teach the predictor as much as possible, so candidates are ranked by

* how few ratings they have (an unrated image is worth more than a fifth opinion),
* how much the predictor's cross-validation heads disagree about them (uncertainty),

and picked greedily so that each pick is far, in CLIP space, from the ones already picked
in this batch (diversity).
Without a predictor (or embeddings) the bot falls back to "fewest ratings first".
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.aesthetic.predictor import Predictor, PredictorError
from dreamrate.db.models import Embedding, Image, Job
from dreamrate.ratings.pairs import PER_PROMPT, choose_pairs, pair_pool, recent_pairs
from dreamrate.ratings.selection import images_needing_ratings, rating_counts, shown_for_rating

__all__ = [
    "choose_for_rating",
    "priority",
    "select_images_to_rate",
    "select_pairs_to_compare",
    "select_what_to_ask",
]

logger = logging.getLogger(__name__)

#: Most candidates scored per request (those with the fewest ratings).
CANDIDATE_POOL = 5000


def priority(n_ratings: np.ndarray, uncertainty: np.ndarray | None) -> np.ndarray:
    """Value of one more rating: fewer ratings and more disagreement rank higher."""
    few = 1.0 / np.sqrt(1.0 + n_ratings.astype(np.float64))
    if uncertainty is None or not np.isfinite(uncertainty).all() or uncertainty.max() <= 0:
        return few
    spread = uncertainty / max(float(np.median(uncertainty)), 1e-12)
    return few * (0.5 + np.minimum(spread, 4.0))


def choose_for_rating(
    embeddings: np.ndarray,
    n_ratings: np.ndarray,
    count: int,
    *,
    uncertainty: np.ndarray | None = None,
    covered: np.ndarray | None = None,
) -> list[int]:
    """Row indices of ``count`` candidates, best first (pure; used by the bot and benchmark).

    ``embeddings`` are unit rows of the candidates; ``covered`` (optional unit rows) are
    images the predictor already knows well, which new picks should stay away from.
    """
    n = len(embeddings)
    if n == 0 or count <= 0:
        return []
    base = priority(n_ratings, uncertainty)
    # Similarity to the nearest already-covered or already-picked image (0 = unrelated).
    nearest = np.zeros(n)
    if covered is not None and len(covered):
        for start in range(0, len(covered), 4096):
            sims = embeddings @ covered[start : start + 4096].T
            nearest = np.maximum(nearest, sims.max(axis=1))
    picked: list[int] = []
    available = np.ones(n, dtype=bool)
    for _ in range(min(count, n)):
        novelty = 1.0 - np.clip(nearest, 0.0, 1.0)
        score = np.where(available, base * (0.25 + novelty), -np.inf)
        best = int(np.argmax(score))
        picked.append(best)
        available[best] = False
        nearest = np.maximum(nearest, embeddings @ embeddings[best])
    return picked


async def _embedded_candidates(
    engine: AsyncEngine, guild_id: int, embedding_model: str
) -> list[Any]:
    """``(id, n ratings, vector)`` of the guild's images that may be shown for rating and have
    an embedding for ``embedding_model``: fewest ratings first, newest among equals."""
    counts = rating_counts(guild_id)
    query = (
        select(Image.id, func.coalesce(counts.c.n, 0).label("n"), Embedding.vector)
        .join(
            Embedding,
            (Embedding.image_id == Image.id) & (Embedding.model == embedding_model),
        )
        .join(Job, Job.id == Image.job_id)
        .outerjoin(counts, counts.c.image_id == Image.id)
        .where(shown_for_rating(guild_id))
        .order_by(func.coalesce(counts.c.n, 0), Image.id.desc())
        .limit(CANDIDATE_POOL)
    )
    async with engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def select_images_to_rate(
    engine: AsyncEngine, count: int, predictor: Predictor | None, guild_id: int
) -> list[int]:
    """Image ids of ``guild_id`` for ``/rate`` and the feed: active selection when
    ``predictor`` exists."""
    if predictor is None:
        return await images_needing_ratings(engine, count, guild_id)
    rows = await _embedded_candidates(engine, guild_id, predictor.embedding_model)
    if not rows:
        # Nothing embedded yet (run `dreamrate embed`): fewest ratings first.
        return await images_needing_ratings(engine, count, guild_id)
    ids = np.array([row.id for row in rows])
    n_ratings = np.array([row.n for row in rows])
    vectors = np.frombuffer(b"".join(row.vector for row in rows), dtype=np.float32)
    try:
        x = predictor.prepare(vectors.reshape(len(rows), -1)) / np.float32(predictor.input_scale)
        members = predictor.ensemble_predict(x)
    except PredictorError as exc:
        logger.warning("active selection off: %s", exc.message)
        return await images_needing_ratings(engine, count, guild_id)
    uncertainty = None if members is None else members.std(axis=1)
    chosen = choose_for_rating(x, n_ratings, count, uncertainty=uncertainty)
    return [int(ids[k]) for k in chosen]


async def select_pairs_to_compare(
    engine: AsyncEngine,
    count: int,
    predictor: Predictor | None,
    guild_id: int,
    member_discord_id: int | None = None,
    *,
    channel_id: int | None = None,
    since: datetime | None = None,
) -> list[tuple[int, int]]:
    """Pairs ``(left, right)`` of ``guild_id``'s images for ``/compare`` and the feed: those
    whose order ``predictor`` is least sure of, when it exists (see
    :mod:`dreamrate.ratings.pairs`); none compared in ``channel_id`` since ``since``."""
    pool = await pair_pool(engine, guild_id, member_discord_id)
    if channel_id is not None and since is not None:
        shown = await recent_pairs(engine, channel_id, since)
        pool = replace(pool, judged=pool.judged | shown)
    if predictor is None or len(pool.image_ids) < 2:
        return choose_pairs(pool, count)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Embedding.image_id, Embedding.vector).where(
                    Embedding.model == predictor.embedding_model,
                    Embedding.image_id.in_([int(i) for i in pool.image_ids]),
                )
            )
        ).all()
    vectors = {int(row.image_id): row.vector for row in rows}
    if len(vectors) < len(pool.image_ids):
        # Some candidates lack embeddings (run `dreamrate embed`): no scores for this batch.
        return choose_pairs(pool, count)
    x = np.frombuffer(b"".join(vectors[int(i)] for i in pool.image_ids), dtype=np.float32)
    try:
        x = x.reshape(len(pool.image_ids), -1)
        scores, heads = predictor.predict(x), predictor.ensemble_predict(x)
    except PredictorError as exc:
        logger.warning("pair selection without the predictor: %s", exc.message)
        return choose_pairs(pool, count)
    return choose_pairs(pool, count, scores=scores, heads=heads)


async def select_what_to_ask(
    engine: AsyncEngine,
    count: int,
    predictor: Predictor | None,
    guild_id: int,
    member_discord_id: int | None = None,
    *,
    kinds: tuple[str, ...] = ("rating", "choice"),
    channel_id: int | None = None,
    since: datetime | None = None,
) -> list[tuple[str, tuple[int, ...]]]:
    """What to ask ``guild_id``'s members next, by expected information for ``predictor``
    (:func:`dreamrate.aesthetic.ask.plan_asks`): ``("rating", (image_id,))`` or
    ``("choice", (left_id, right_id))``, best first; ``kinds`` limits them (``/rate``:
    ratings, ``/compare``: choices). Pairs are those :func:`select_pairs_to_compare` would
    consider (none ``member_discord_id`` judged, none shown in ``channel_id`` since
    ``since``). Without a predictor, or with candidates lacking embeddings, there is nothing
    to weigh the kinds by: [] (the caller keeps its own mix and pickers)."""
    from dreamrate.aesthetic.ask import AskInformation, plan_asks

    if predictor is None or count <= 0:
        return []
    rows = await _embedded_candidates(engine, guild_id, predictor.embedding_model)
    if not rows:
        return []
    ids = np.array([row.id for row in rows], dtype=np.int64)
    position = {int(i): k for k, i in enumerate(ids.tolist())}
    pairs = np.zeros((0, 2), dtype=np.int64)
    if "choice" in kinds:
        pool = await pair_pool(engine, guild_id, member_discord_id)
        if channel_id is not None and since is not None:
            pool = replace(pool, judged=pool.judged | await recent_pairs(engine, channel_id, since))
        by_group: dict[str, list[int]] = {}
        for image_id, group in zip(pool.image_ids.tolist(), pool.groups, strict=True):
            if int(image_id) in position:
                by_group.setdefault(group, []).append(position[int(image_id)])
        found = [
            (i, j)
            for members in by_group.values()
            for k, i in enumerate(members[:PER_PROMPT])
            for j in members[k + 1 : PER_PROMPT]
            if frozenset((int(ids[i]), int(ids[j]))) not in pool.judged
        ]
        pairs = np.asarray(found, dtype=np.int64).reshape(-1, 2)
    vectors = np.frombuffer(b"".join(row.vector for row in rows), dtype=np.float32)
    try:
        x = vectors.reshape(len(rows), -1)
        scores, heads = predictor.predict(x), predictor.ensemble_predict(x)
    except PredictorError as exc:
        logger.warning("asking without the predictor: %s", exc.message)
        return []
    asks = plan_asks(
        scores,
        heads,
        pairs,
        count,
        AskInformation.of(predictor.training),
        ratings_so_far=np.array([row.n for row in rows]),
        kinds=kinds,
    )
    return [(a.kind, tuple(int(ids[r]) for r in a.rows)) for a in asks]
