"""The community's own data as a shareable dataset, in the spirit of Simulacra Aesthetic Captions.

``DIR/images/<image id>.png``, ``generations.parquet`` (prompt, parameters, seed),
``images.parquet``, ``ratings.parquet`` and a datasheet ``README.md``. Raters and requesters
appear only as pseudonyms (a keyed hash with a key drawn for this export and then thrown
away, so pseudonyms cannot be linked to Discord ids or across exports). Opted-out, erased
and banned members' generations and ratings and removed images are left out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.atomic import atomic_folder
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import Image, Job, JobStatus, Rating, User

__all__ = ["DatasetExportError", "export_dataset"]


class DatasetExportError(DreamrateError):
    """The dataset cannot be written."""


def _excluded() -> Any:
    return User.banned.is_(True) | User.opted_out.is_(True) | User.erased_at.is_not(None)


async def export_dataset(
    engine: AsyncEngine, images_dir: Path, out: Path, *, force: bool = False
) -> dict[str, int]:
    """Write the dataset folder atomically; return the counts written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if out.exists() and not force:
        raise DatasetExportError(f"--out: {out} already exists (choose another folder or --force)")
    excluded_users = select(User.id).where(_excluded())
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
                .where(Job.status == JobStatus.DONE, Job.requester_id.not_in(excluded_users))
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
                    .where(Image.job_id.in_(job_ids), Image.removed.is_(False))
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
                    select(
                        Rating.image_id,
                        Rating.user_id,
                        Rating.value,
                        Rating.scale,
                        Rating.created_at,
                    )
                    .where(Rating.image_id.in_(image_ids), Rating.user_id.not_in(excluded_users))
                    .order_by(Rating.image_id, Rating.id)
                )
            ).all()
            if image_ids
            else []
        )

    key = secrets.token_bytes(32)  # never stored: pseudonyms are unlinkable after export

    def pseudonym(user_id: int) -> str:
        return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:16]

    with atomic_folder(out, DatasetExportError, overwrite=force) as tmp:
        (tmp / "images").mkdir()
        kept_images = []
        for image in images:
            source = images_dir / image.path
            if not source.is_file():
                continue  # a missing file is left out rather than shipped as a dangling row
            shutil.copyfile(source, tmp / "images" / f"{image.id}.png")
            kept_images.append(image)
        kept_ids = {image.id for image in kept_images}
        generations = pa.table(
            {
                "generation_id": [r.id for r in jobs],
                "requester": [pseudonym(r.requester_id) for r in jobs],
                "prompt": [r.prompt for r in jobs],
                "negative_prompt": pa.array([r.negative_prompt for r in jobs], pa.string()),
                "model": [r.model for r in jobs],
                "width": [r.width for r in jobs],
                "height": [r.height for r in jobs],
                "steps": [r.steps for r in jobs],
                "guidance": [r.guidance for r in jobs],
                "scheduler": [r.scheduler for r in jobs],
                "seed": pa.array([r.seed for r in jobs], pa.int64()),
                "created_at": pa.array([r.created_at for r in jobs], pa.timestamp("us", tz="UTC")),
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
        rating_table = pa.table(
            {
                "image_id": pa.array([r.image_id for r in kept_ratings], pa.int64()),
                "rater": pa.array([pseudonym(r.user_id) for r in kept_ratings], pa.string()),
                "rating": pa.array([float(r.value) for r in kept_ratings], pa.float64()),
                "scale": pa.array([r.scale for r in kept_ratings], pa.string()),
                "created_at": pa.array(
                    [r.created_at for r in kept_ratings], pa.timestamp("us", tz="UTC")
                ),
            }
        )
        for name, table in (
            ("generations", generations),
            ("images", image_table),
            ("ratings", rating_table),
        ):
            pq.write_table(table, tmp / f"{name}.parquet", compression="zstd")
        counts = {
            "generations": len(generations),
            "images": len(image_table),
            "ratings": len(rating_table),
            "raters": len({r.user_id for r in kept_ratings}),
        }
        (tmp / "README.md").write_text(_datasheet(counts), encoding="utf-8")
    return counts


def _datasheet(counts: dict[str, int]) -> str:
    today = datetime.now(UTC).date().isoformat()
    return f"""# Community aesthetic ratings (dreamrate export, {today})

## Contents
| file | rows | columns |
|---|---|---|
| `generations.parquet` | {counts["generations"]} | generation_id, requester (pseudonym), prompt, negative_prompt, model, width, height, steps, guidance, scheduler, seed, created_at |
| `images.parquet` | {counts["images"]} | image_id, generation_id, index, seed, width, height, sha256, file |
| `ratings.parquet` | {counts["ratings"]} | image_id, rater (pseudonym), rating, scale, created_at |
| `images/` | {counts["images"]} | one PNG per image, named `<image_id>.png` |

{counts["raters"]} raters. `rating` is on the scale named in `scale` (`numbers-10`: 1 worst to 10 best).

## Collection
Members of a Discord community generated these images with Stable Diffusion through the
dreamrate bot (`/dream`) and rated them by reacting with rating emoji; a member's rating of
an image is their latest rating emoji on it. Raters rated whatever they chose to, so images
have different numbers of ratings, and raters differ in how generous they are: see the
rater-aware aggregation in dreamrate (`ratings/aggregate.py`) before averaging.

## Privacy
- Requesters and raters appear only as pseudonyms: keyed hashes whose key was drawn for this
  export and discarded, so they cannot be linked to Discord accounts or across exports.
- Members who opted out or erased their data, banned members, and images removed by
  moderators are not included.
- Prompts are as typed by members; review them before publishing.

## Intended use
Training and evaluating aesthetic predictors; studying rating behaviour. Check the license of
the model that generated the images and your community's consent before redistribution.
"""
