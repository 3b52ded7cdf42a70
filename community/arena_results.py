"""The arena's results: how the community judged models against each other, blind.

The report counts each member's current choice on each round made before it closed, by the
same who-counts rule as every export, and adds the difference in predicted aesthetic
between the models' images of the same prompts (``dreamrate arena report``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from dreamrate.community.arena import ArenaError
from dreamrate.db.models import ArenaRound, Choice, Image, Job
from dreamrate.ratings.arena_stats import Judgement, PairResult, pair_results
from dreamrate.ratings.policy import counted_choices

__all__ = ["ArenaError", "ArenaReport", "arena_judgements", "arena_report"]


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
