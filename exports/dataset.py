"""The community's own data as a shareable dataset, in the spirit of Simulacra Aesthetic Captions.

``DIR/images/<image id>.png``, ``generations.parquet`` (prompt, parameters, seed),
``images.parquet``, ``ratings.parquet`` (the rating schema, :mod:`dreamrate.ratings.schema`),
``embeddings.parquet`` (when the images have CLIP embeddings) and a datasheet ``README.md``,
so ``dreamrate train --ratings DIR/ratings.parquet --embeddings DIR/embeddings.parquet``
trains on it directly. Raters and requesters appear only as pseudonyms (a keyed hash with a
key drawn for this export and then thrown away, so pseudonyms cannot be linked to Discord ids
or across exports). Who and what is left out is :mod:`dreamrate.ratings.policy`'s rule:
opted-out, erased and banned members, removed and safety-flagged images.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.atomic import atomic_folder
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import Embedding, Image, Job, JobStatus, Rating, User
from dreamrate.exports.choice_export import current_choices
from dreamrate.generation.store import ImageStore, ImageUnreadable, as_image_store
from dreamrate.ratings.policy import counted_image, counted_job, counted_ratings, in_guilds
from dreamrate.ratings.schema import choice_schema, on_the_day, prompt_group, rating_schema

__all__ = ["DatasetExportError", "export_dataset"]


class DatasetExportError(DreamrateError):
    """The dataset cannot be written."""


#: Images read from the store at once (S3 answers each read after a round trip).
READ_THREADS = 8


def _copy_images(store: ImageStore, images: Sequence[Any], folder: Path) -> list[Any]:
    """Write each image's PNG to ``folder/<id>.png``; the ones written. An image missing from
    the store is left out rather than shipped as a dangling row; a store that cannot be
    reached stops the export (StorageError)."""

    def fetch(image: Any) -> bytes | None:
        try:
            return store.read(image.path)
        except ImageUnreadable:
            return None

    kept = []
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for image, data in zip(images, pool.map(fetch, images), strict=True):
            if data is not None:
                (folder / f"{image.id}.png").write_bytes(data)
                kept.append(image)
    return kept


async def export_dataset(
    engine: AsyncEngine,
    store: ImageStore | Path,
    out: Path,
    *,
    embedding_model: str | None = None,
    guilds: Sequence[int] | None = None,
    force: bool = False,
) -> dict[str, int]:
    """Write the dataset folder atomically; return the counts written.

    The image files are read from ``store`` (or the local folder of one).
    ``embedding_model`` (an open_clip id) adds that model's embeddings of the images;
    ``guilds`` limits it to those communities (default: every guild).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if out.exists() and not force:
        raise DatasetExportError(f"--out: {out} already exists (choose another folder or --force)")
    async with engine.connect() as conn:
        jobs = (
            await conn.execute(
                select(
                    Job.id,
                    Job.requester_id,
                    Job.prompt,
                    Job.negative_prompt,
                    Job.model,
                    Job.width,
                    Job.height,
                    Job.steps,
                    Job.guidance,
                    Job.scheduler,
                    Job.seed,
                    Job.created_at,
                )
                .join(User, User.id == Job.requester_id)
                .where(Job.status == JobStatus.DONE, counted_job(), in_guilds(guilds))
                .order_by(Job.id)
            )
        ).all()
        job_ids = [row.id for row in jobs]
        images = (
            (
                await conn.execute(
                    select(
                        Image.id,
                        Image.job_id,
                        Image.index,
                        Image.seed,
                        Image.width,
                        Image.height,
                        Image.sha256,
                        Image.path,
                    )
                    .where(Image.job_id.in_(job_ids), counted_image(leaving=True))
                    .order_by(Image.id)
                )
            ).all()
            if job_ids
            else []
        )
        image_ids = [image.id for image in images]
        ratings = (
            (
                await conn.execute(
                    counted_ratings(
                        Rating.image_id,
                        Rating.user_id,
                        Rating.value,
                        Rating.scale,
                        Rating.rated_at,
                        Rating.updated_at,
                        leaving=True,
                        guilds=guilds,
                    )
                    .where(Rating.image_id.in_(image_ids))
                    .order_by(Rating.image_id, Rating.id)
                )
            ).all()
            if image_ids
            else []
        )

        vectors = (
            (
                await conn.execute(
                    select(Embedding.image_id, Embedding.dim, Embedding.vector)
                    .where(Embedding.image_id.in_(image_ids), Embedding.model == embedding_model)
                    .order_by(Embedding.image_id)
                )
            ).all()
            if image_ids and embedding_model
            else []
        )
    prompt_of = {job.id: job.prompt for job in jobs}
    choices = await current_choices(engine, guilds=guilds)

    # Two keys, drawn for this export and never stored: a requester's pseudonym differs
    # from their rater pseudonym, so Discord's public "made by" cannot unmask their ratings.
    requester_key, rater_key = secrets.token_bytes(32), secrets.token_bytes(32)

    def pseudonym(key: bytes, user_id: int) -> str:
        return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:16]

    with atomic_folder(out, DatasetExportError, overwrite=force) as tmp:
        (tmp / "images").mkdir()
        kept_images = await asyncio.to_thread(
            _copy_images, as_image_store(store), images, tmp / "images"
        )
        kept_ids = {image.id for image in kept_images}
        generations = pa.table(
            {
                "generation_id": [r.id for r in jobs],
                "requester": [pseudonym(requester_key, r.requester_id) for r in jobs],
                "prompt": [r.prompt for r in jobs],
                "negative_prompt": pa.array([r.negative_prompt for r in jobs], pa.string()),
                "model": [r.model for r in jobs],
                "width": [r.width for r in jobs],
                "height": [r.height for r in jobs],
                "steps": [r.steps for r in jobs],
                "guidance": [r.guidance for r in jobs],
                "scheduler": [r.scheduler for r in jobs],
                "seed": pa.array([r.seed for r in jobs], pa.int64()),
                "created_at": pa.array(
                    [on_the_day(r.created_at) for r in jobs], pa.timestamp("us", tz="UTC")
                ),
            }
        )
        image_table = pa.table(
            {
                "image_id": [i.id for i in kept_images],
                "generation_id": [i.job_id for i in kept_images],
                "index": [i.index for i in kept_images],
                "seed": pa.array([i.seed for i in kept_images], pa.int64()),
                "width": [i.width for i in kept_images],
                "height": [i.height for i in kept_images],
                "sha256": [i.sha256 for i in kept_images],
                "file": [f"images/{i.id}.png" for i in kept_images],
            }
        )
        kept_ratings = [r for r in ratings if r.image_id in kept_ids]
        group_of = {image.id: prompt_group(prompt_of[image.job_id]) for image in kept_images}
        rating_table = pa.Table.from_pylist(
            [
                {
                    "image_id": r.image_id,
                    "rater_id": pseudonym(rater_key, r.user_id),
                    "rating": float(r.value),
                    "scale": r.scale,
                    "rated_at": on_the_day(r.rated_at or r.updated_at),
                    "group": group_of[r.image_id],
                }
                for r in kept_ratings
            ],
            schema=rating_schema(),
        )
        # A choice travels only with both of its images (same rater pseudonyms as ratings).
        kept_choices = [c for c in choices if c["image_a"] in kept_ids and c["image_b"] in kept_ids]
        choice_table = pa.Table.from_pylist(
            [
                {
                    "image_a": c["image_a"],
                    "image_b": c["image_b"],
                    "rater_id": pseudonym(rater_key, c["user_id"]),
                    "winner": c["winner"],
                    "group_a": c["group_a"],
                    "group_b": c["group_b"],
                    "timestamp": c["timestamp"],
                }
                for c in kept_choices
            ],
            schema=choice_schema(),
        )
        tables = [
            ("generations", generations),
            ("images", image_table),
            ("ratings", rating_table),
            ("comparisons", choice_table),
        ]
        kept_vectors = [v for v in vectors if v.image_id in kept_ids]
        if kept_vectors:
            tables.append(("embeddings", _embedding_table(kept_vectors)))
        for name, table in tables:
            pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
        counts = {
            "generations": len(generations),
            "images": len(image_table),
            "ratings": len(rating_table),
            "comparisons": len(choice_table),
            "raters": len({r.user_id for r in kept_ratings} | {c["user_id"] for c in kept_choices}),
            "embeddings": len(kept_vectors),
        }
        (tmp / "README.md").write_text(_datasheet(counts, embedding_model), encoding="utf-8")
    return counts


def _embedding_table(rows: list[Any]) -> Any:
    """``image_id`` and ``embedding`` (fixed-size list of float32), as ``train`` reads them."""
    import numpy as np
    import pyarrow as pa

    dims = {row.dim for row in rows}
    if len(dims) > 1:
        raise DatasetExportError(f"embeddings of one model have mixed widths {sorted(dims)}")
    flat = np.frombuffer(b"".join(row.vector for row in rows), dtype=np.float32)
    return pa.table(
        {
            "image_id": pa.array([row.image_id for row in rows], pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat), dims.pop()),
        }
    )


def _datasheet(counts: dict[str, int], embedding_model: str | None) -> str:
    today = datetime.now(UTC).date().isoformat()
    return f"""# Community aesthetic ratings (dreamrate export, {today})

## Contents
| file | rows | columns |
|---|---|---|
| `generations.parquet` | {counts["generations"]} | generation_id, requester (pseudonym), prompt, negative_prompt, model, width, height, steps, guidance, scheduler, seed, created_at |
| `images.parquet` | {counts["images"]} | image_id, generation_id, index, seed, width, height, sha256, file |
| `ratings.parquet` | {counts["ratings"]} | image_id, rater_id (pseudonym), rating, scale, rated_at, group (prompt) |
| `comparisons.parquet` | {counts["comparisons"]} | image_a, image_b, rater_id (pseudonym), winner (a, b or tie), group_a, group_b, timestamp |
| `embeddings.parquet` | {counts["embeddings"]} | image_id, embedding ({embedding_model or "none"} image embedding; absent when there are none) |
| `images/` | {counts["images"]} | one PNG per image, named `<image_id>.png` |

{counts["raters"]} raters. `rating` is on the scale named in `scale` (`numbers-10`: 1 worst to 10 best).
Train a predictor on it with `dreamrate train --ratings ratings.parquet --comparisons
comparisons.parquet --embeddings embeddings.parquet --embedding-model {embedding_model or "MODEL"}`
(either of the first two alone works too).

## Collection
Members of a Discord community generated these images with Stable Diffusion through the
dreamrate bot (`/dream`) and rated them by reacting with rating emoji; a member's rating of
an image is their latest rating emoji on it. On comparison posts (two images side by side)
they chose with ⬅️ (image_a), ➡️ (image_b) or 🟰 (can't choose, `tie`). Raters rated whatever they chose to, so images
have different numbers of ratings, and raters differ in how generous they are: see the
rater-aware aggregation in dreamrate (`ratings/aggregate.py`) before averaging.

## Privacy
- Requesters and raters appear only as pseudonyms: keyed hashes whose keys were drawn for this
  export and discarded, so they cannot be linked to Discord accounts or across exports. The
  requester and the rater keys differ, so a member's generations (which Discord shows
  publicly with their name) do not unmask their ratings.
- Times are given to the day only (midnight UTC).
- Members who opted out or erased their data, banned members (in the guild that banned them),
  images removed by moderators, images the safety checker flagged, and images with reports
  a moderator has not yet reviewed are not included.
- Prompts are as typed by members; review them before publishing.

## Intended use
Training and evaluating aesthetic predictors; studying rating behaviour. Check the license of
the model that generated the images and your community's consent before redistribution.
"""
