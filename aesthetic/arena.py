"""The arena: old model against new, judged blind by the community.

A round is one prompt with one seed rendered by two models (two jobs the ordinary workers
serve, never delivered as ordinary posts), shown side by side with the sides drawn at
random and the models' names hidden; members choose with the comparison emoji, and their
choices land in the choice log like any comparison's. When the round closes its post names
the models. The report counts each member's current choice on each round made before it
closed, by the same who-counts rule as every export, and adds the difference in predicted
aesthetic between the models' images of the same prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import ArenaRound, Choice, Image, Job, JobStatus
from dreamrate.db.types import utcnow
from dreamrate.ratings.arena_stats import Judgement, PairResult, pair_results
from dreamrate.ratings.policy import counted_choices

__all__ = [
    "ArenaError",
    "ArenaReport",
    "RoundState",
    "arena_judgements",
    "arena_report",
    "close_round",
    "fail_round",
    "feed_arena_channels",
    "open_round",
    "posted_message",
    "round_for_job",
    "rounds_due",
    "start_round",
]

FINISHED = (JobStatus.FAILED, JobStatus.CANCELLED)
FEED_RETRY = timedelta(hours=1)  #: a feed waits this long after a failed round


class ArenaError(DreamrateError):
    """An arena that cannot run or be reported."""


@dataclass(frozen=True)
class RoundState:
    id: int
    channel_id: int
    prompt: str
    left_job_id: int
    right_job_id: int
    left_model: str
    right_model: str
    left_status: JobStatus
    right_status: JobStatus
    message_id: int | None
    status: str


async def start_round(
    engine: AsyncEngine,
    *,
    guild_id: int,
    channel_id: int,
    prompt: str,
    seed: int,
    left_job_id: int,
    right_job_id: int,
) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(ArenaRound).values(
                guild_id=guild_id,
                channel_id=channel_id,
                prompt=prompt,
                seed=seed,
                left_job_id=left_job_id,
                right_job_id=right_job_id,
                status="rendering",
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def _rounds() -> Any:
    left, right = aliased(Job), aliased(Job)
    return (
        select(
            ArenaRound.id,
            ArenaRound.channel_id,
            ArenaRound.prompt,
            ArenaRound.left_job_id,
            ArenaRound.right_job_id,
            left.model.label("left_model"),
            right.model.label("right_model"),
            left.status.label("left_status"),
            right.status.label("right_status"),
            ArenaRound.message_id,
            ArenaRound.status,
        )
        .join(left, left.id == ArenaRound.left_job_id)
        .join(right, right.id == ArenaRound.right_job_id)
    )


async def rounds_due(engine: AsyncEngine, now: datetime | None = None) -> list[RoundState]:
    """Rounds with something to do: both images made (post), a job that ended without
    images (fail), or an open round past its time (close)."""
    now = now or utcnow()
    query = _rounds().where(
        or_(
            ArenaRound.status == "rendering",
            (ArenaRound.status == "open") & (ArenaRound.closes_at <= now),
        )
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(ArenaRound.id))).all()
    due = [RoundState(**row._mapping) for row in rows]
    return [
        r
        for r in due
        if r.status == "open"
        or JobStatus.DONE == r.left_status == r.right_status
        or r.left_status in FINISHED
        or r.right_status in FINISHED
    ]


async def feed_arena_channels(engine: AsyncEngine) -> list[tuple[int, int]]:
    """``(guild, feed channel)`` of every feed with the arena on and no round going there."""
    from dreamrate.db.models import GuildSettings

    going = select(ArenaRound.id).where(
        ArenaRound.channel_id == GuildSettings.feed_channel_id,
        # A round going, or one that failed within the hour: a broken model is not
        # retried every few seconds.
        ArenaRound.status.in_(("rendering", "open"))
        | ((ArenaRound.status == "failed") & (ArenaRound.created_at > utcnow() - FEED_RETRY)),
    )
    query = select(GuildSettings.guild_id, GuildSettings.feed_channel_id).where(
        GuildSettings.feed_arena.is_(True),
        GuildSettings.feed_channel_id.is_not(None),
        ~going.exists(),
    )
    async with engine.connect() as conn:
        return [(int(g), int(c)) for g, c in (await conn.execute(query)).all()]


async def round_for_job(engine: AsyncEngine, job_id: int) -> RoundState | None:
    """The round a job renders for, if any (``/job`` hides its model while it is open)."""
    query = _rounds().where(
        or_(ArenaRound.left_job_id == job_id, ArenaRound.right_job_id == job_id)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else RoundState(**row._mapping)


async def posted_message(engine: AsyncEngine, left_image: int, right_image: int) -> int | None:
    """The arena post of this pair, if one was recorded (by a recovery after a crash)."""
    from dreamrate.db.models import ComparisonPost

    async with engine.connect() as conn:
        return await conn.scalar(
            select(ComparisonPost.message_id).where(
                ComparisonPost.image_a_id == left_image,
                ComparisonPost.image_b_id == right_image,
                ComparisonPost.kind == "arena",
            )
        )


async def open_round(
    engine: AsyncEngine, round_id: int, message_id: int, closes_at: datetime
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(ArenaRound)
            .where(ArenaRound.id == round_id)
            .values(message_id=message_id, status="open", closes_at=closes_at)
        )


async def close_round(engine: AsyncEngine, round_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(ArenaRound)
            .where(ArenaRound.id == round_id)
            .values(status="closed", closed_at=utcnow())
        )


async def fail_round(engine: AsyncEngine, round_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(ArenaRound).where(ArenaRound.id == round_id).values(status="failed")
        )


async def arena_judgements(
    engine: AsyncEngine, *, guilds: Sequence[int] | None = None
) -> list[tuple[Judgement, int, int]]:
    """Each counted choice on an arena post made while its round was open, with the left
    and right image ids."""
    right_image, right_job = aliased(Image), aliased(Job)
    query = (
        counted_choices(
            Choice.winner,
            Choice.chosen_at,
            Choice.image_a_id,
            Choice.image_b_id,
            Job.model.label("model_a"),
            right_job.model.label("model_b"),
            ArenaRound.status,
            ArenaRound.closed_at,
            leaving=False,
            guilds=guilds,
        )
        .join(right_image, right_image.id == Choice.image_b_id)
        .join(right_job, right_job.id == right_image.job_id)
        .join(ArenaRound, ArenaRound.message_id == Choice.message_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    out = []
    for row in rows:
        if row.status == "closed" and (row.chosen_at is None or row.chosen_at > row.closed_at):
            continue  # chosen after the names were shown
        out.append(
            (Judgement(row.model_a, row.model_b, row.winner), row.image_a_id, row.image_b_id)
        )
    return out


@dataclass(frozen=True)
class ArenaReport:
    pairs: list[PairResult]
    #: Per pair: (rounds with both images scored, mean of first minus second), if a
    #: predictor and embeddings were there.
    aesthetic: dict[tuple[str, str], tuple[int, float]]


async def arena_report(
    engine: AsyncEngine,
    *,
    models: tuple[str, str] | None = None,
    predictor_dir: Path | None = None,
    embedding_model: str | None = None,
    guilds: Sequence[int] | None = None,
) -> ArenaReport:
    """Win rates of every pair judged (or of ``models`` alone) and, with a predictor, the
    difference in predicted aesthetic over the same rounds' images."""
    if models is not None and models[0] == models[1]:
        raise ArenaError(f"--models: an arena needs two different models, not {models[0]} twice")
    found = await arena_judgements(engine, guilds=guilds)
    if models is not None:
        wanted = set(models)
        found = [f for f in found if {f[0].model_a, f[0].model_b} == wanted]
    pairs = pair_results(j for j, _, _ in found)
    aesthetic: dict[tuple[str, str], tuple[int, float]] = {}
    if predictor_dir is not None and embedding_model is not None:
        aesthetic = await _aesthetic_difference(engine, predictor_dir, embedding_model, found)
    return ArenaReport(pairs, aesthetic)


async def _aesthetic_difference(
    engine: AsyncEngine,
    predictor_dir: Path,
    embedding_model: str,
    found: list[tuple[Judgement, int, int]],
) -> dict[tuple[str, str], tuple[int, float]]:
    from dreamrate.aesthetic.predictor import load_predictor
    from dreamrate.db.models import Embedding

    predictor = load_predictor(predictor_dir, embedding_model=embedding_model)
    image_ids = {i for _, a, b in found for i in (a, b)}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Embedding.image_id, Embedding.dim, Embedding.vector).where(
                    Embedding.image_id.in_(image_ids), Embedding.model == embedding_model
                )
            )
        ).all()
    vectors = {r.image_id: np.frombuffer(r.vector, dtype=np.float32, count=r.dim) for r in rows}
    scored = [i for i in image_ids if i in vectors]
    scores = (
        dict(zip(scored, predictor.predict(np.stack([vectors[i] for i in scored])), strict=True))
        if scored
        else {}
    )
    by_pair: dict[tuple[str, str], dict[tuple[int, int], float]] = {}
    for judgement, a, b in found:
        if a not in scores or b not in scores:
            continue
        first, second = sorted((judgement.model_a, judgement.model_b))
        difference = scores[a] - scores[b] if judgement.model_a == first else scores[b] - scores[a]
        by_pair.setdefault((first, second), {})[(min(a, b), max(a, b))] = float(
            difference
        )  # once per round
    return {
        pair: (len(diffs), float(np.mean(list(diffs.values()))) if diffs else math.nan)
        for pair, diffs in by_pair.items()
    }
