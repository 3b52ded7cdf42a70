"""CLIP embeddings of rated images, batched and resumable (each batch commits)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.aesthetic.clip_model import ClipModel
from dreamrate.aesthetic.embed_pipeline import iter_embeddings
from dreamrate.db.models import Embedding, Image, Rating
from dreamrate.db.users import dialect_insert
from dreamrate.generation.store import ImageStore, as_image_store
from dreamrate.ratings.policy import counted_image

__all__ = ["EmbedSummary", "embed_rated_images", "images_to_embed"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSummary:
    embedded: int
    unreadable: int  #: image files missing or corrupted (left for a later run)
    already: int  #: rated images that had an embedding for this model


def _missing_query(model_id: str):
    has_rating = exists().where(Rating.image_id == Image.id)
    has_embedding = exists().where(Embedding.image_id == Image.id, Embedding.model == model_id)
    return select(Image.id, Image.path).where(
        counted_image(leaving=False), has_rating, ~has_embedding
    )


async def images_to_embed(engine: AsyncEngine, model_id: str) -> list[tuple[int, str]]:
    """Rated, not removed images without a ``model_id`` embedding, oldest first."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_missing_query(model_id).order_by(Image.id))).all()
    return [(row.id, row.path) for row in rows]


async def embed_rated_images(
    engine: AsyncEngine,
    clip: ClipModel,
    images: ImageStore | Path,
    *,
    batch_size: int = 32,
    limit: int | None = None,
    workers: int | None = None,
    show_progress: bool = True,
) -> EmbedSummary:
    """Embed every rated image lacking a ``clip.id`` embedding; safe to stop and rerun.

    The images are read from ``images`` (a store, or the local folder of one). Images are
    decoded and preprocessed on ``workers`` threads (default: the cores) a batch
    ahead of the forward pass (:mod:`dreamrate.aesthetic.embed_pipeline`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    todo = await images_to_embed(engine, clip.id)
    if limit is not None:
        todo = todo[:limit]
    async with engine.connect() as conn:
        total_rated = (
            await conn.execute(
                select(func.count(func.distinct(Rating.image_id)))
                .join(Image, Image.id == Rating.image_id)
                .where(counted_image(leaving=False))
            )
        ).scalar_one()
    insert = dialect_insert(engine)
    embedded = unreadable = 0
    progress = Progress(
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=False,
    )
    store = as_image_store(images)
    batches = iter_embeddings(clip, todo, batch_size=batch_size, workers=workers, read=store.read)
    with progress, contextlib.closing(batches):  # an error stops the decoding threads too
        task = progress.add_task("embed", total=len(todo), rate="-")
        while True:
            # The generator runs on a worker thread: the event loop (and the database) stay free.
            step = await asyncio.to_thread(next, batches, None)
            if step is None:
                break
            ids, vectors, bad = step
            unreadable += bad
            if ids:
                rows = [
                    {
                        "image_id": iid,
                        "model": clip.id,
                        "dim": clip.dim,
                        "vector": np.ascontiguousarray(vec, dtype=np.float32).tobytes(),
                    }
                    for iid, vec in zip(ids, vectors, strict=True)
                ]
                statement = insert(Embedding).on_conflict_do_nothing(
                    index_elements=["image_id", "model"]
                )
                async with engine.begin() as conn:
                    await conn.execute(statement, rows)
                embedded += len(rows)
            progress.advance(task, len(ids) + bad)
            elapsed = progress.tasks[0].elapsed or 0
            progress.update(task, rate=f"{embedded / elapsed:.1f}" if elapsed else "-")
    return EmbedSummary(
        embedded=embedded,
        unreadable=unreadable,
        already=total_rated - len(todo) if limit is None else 0,
    )
