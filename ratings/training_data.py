"""Training data: the community's counted ratings with their images' embeddings, from the
database or from Parquet files (this project's exports, public datasets)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import Embedding, Image, Job, Rating, User
from dreamrate.ratings.aggregate import RatingPanel

__all__ = [
    "TrainingData",
    "TrainingError",
    "check_embeddings",
    "load_database_data",
    "load_file_data",
    "prompt_group",
]


class TrainingError(DreamrateError):
    """The data cannot train a predictor (too little, wrong shape, not finite)."""


@dataclass(frozen=True)
class TrainingData:
    """Ratings plus one embedding per image, and the prompt group of each image."""

    panel: RatingPanel
    image_ids: np.ndarray  #: images with an embedding
    embeddings: np.ndarray  #: (n, dim) float32, row i for image_ids[i]
    groups: np.ndarray  #: prompt (or job) of each image; same order
    embedding_model: str
    #: image id -> file, for the report's image grids (may be empty)
    image_paths: dict[int, str] = field(default_factory=dict)


def check_embeddings(embeddings: np.ndarray, dim: int | None, model: str) -> np.ndarray:
    """Refuse embeddings of the wrong width or with NaN/inf rows (one line)."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise TrainingError("embeddings must be a 2-d array (one row per image)")
    if dim is not None and x.shape[1] != dim:
        raise TrainingError(f"embeddings are {x.shape[1]}-d but {model} embeddings are {dim}-d")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise TrainingError(f"{int(bad.sum())} embedding(s) contain NaN or infinite values")
    return x


def prompt_group(prompt: str) -> str:
    """Images of the same prompt (up to case and spacing) share a validation group."""
    return hashlib.sha1(" ".join(prompt.lower().split()).encode()).hexdigest()[:16]


async def load_database_data(
    engine: AsyncEngine, *, embedding_model: str, scale: str, images_dir: Path | None = None
) -> TrainingData:
    """Current ratings on ``scale`` and ``embedding_model`` embeddings of rated images.

    Banned, opted-out and erased members' ratings and removed images are never used.
    """
    ratings_q = (
        select(Rating.image_id, Rating.user_id, Rating.value, Rating.created_at)
        .join(Image, Image.id == Rating.image_id)
        .join(User, User.id == Rating.user_id)
        .where(
            Image.removed.is_(False),
            User.banned.is_(False),
            User.opted_out.is_(False),
            User.erased_at.is_(None),
            Rating.scale == scale,
        )
        .order_by(Rating.id)
    )
    emb_q = (
        select(Embedding.image_id, Embedding.dim, Embedding.vector, Image.path, Job.prompt)
        .join(Image, Image.id == Embedding.image_id)
        .join(Job, Job.id == Image.job_id)
        .where(Embedding.model == embedding_model, Image.removed.is_(False))
        .order_by(Embedding.image_id)
    )
    async with engine.connect() as conn:
        ratings = (await conn.execute(ratings_q)).all()
        embedded = (await conn.execute(emb_q)).all()
    panel = RatingPanel.from_columns(
        [r.image_id for r in ratings],
        [r.user_id for r in ratings],
        [r.value for r in ratings],
        [r.created_at.timestamp() for r in ratings],
    )
    dims = {row.dim for row in embedded}
    if len(dims) > 1:
        raise TrainingError(
            f"{embedding_model} embeddings in the database have mixed widths {sorted(dims)}"
        )
    dim = dims.pop() if dims else 0
    vectors = np.frombuffer(b"".join(row.vector for row in embedded), dtype=np.float32)
    embeddings = vectors.reshape(len(embedded), dim) if embedded else np.zeros((0, 0), np.float32)
    paths = {
        row.image_id: str(images_dir / row.path) if images_dir else row.path for row in embedded
    }
    return TrainingData(
        panel=panel,
        image_ids=np.array([row.image_id for row in embedded], dtype=np.int64),
        embeddings=embeddings,
        groups=np.array([prompt_group(row.prompt) for row in embedded]),
        embedding_model=embedding_model,
        image_paths=paths,
    )


def _read_table(path: Path, option: str):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise TrainingError(f"{option}: no such file {path}")
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TrainingError(
            f"{option}: {path} is not a readable Parquet file ({first[:160]})"
        ) from None


def load_file_data(
    ratings_path: Path, embeddings_path: Path, *, embedding_model: str, dim: int | None
) -> TrainingData:
    """``ratings.parquet`` (``image_id``, ``rater_id``, ``rating``, optional ``group`` and
    ``timestamp``) and ``embeddings.parquet`` (``image_id``, ``embedding`` fixed-size list)."""
    import pyarrow as pa

    ratings = _read_table(ratings_path, "--ratings")
    names = set(ratings.column_names)
    value_col = "rating" if "rating" in names else "value" if "value" in names else None
    missing = [c for c in ("image_id", "rater_id") if c not in names]
    if missing or value_col is None:
        need = [*missing, *([] if value_col else ["rating"])]
        raise TrainingError(f"--ratings: {ratings_path} lacks column(s) {', '.join(need)}")
    try:
        panel = RatingPanel.from_columns(
            ratings.column("image_id").to_numpy(zero_copy_only=False).astype(np.int64),
            ratings.column("rater_id").to_numpy(zero_copy_only=False).astype(str),
            ratings.column(value_col).to_numpy(zero_copy_only=False).astype(np.float64),
            ratings.column("timestamp").to_numpy(zero_copy_only=False).astype(np.float64)
            if "timestamp" in names
            else None,
        )
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"--ratings: {exc}") from None

    table = _read_table(embeddings_path, "--embeddings")
    if not {"image_id", "embedding"} <= set(table.column_names):
        raise TrainingError(f"--embeddings: {embeddings_path} needs columns image_id and embedding")
    column = table.column("embedding").combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        flat = column.flatten().to_numpy(zero_copy_only=False)
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lengths = set(column.value_lengths().to_numpy(zero_copy_only=False).tolist())
        if len(lengths) > 1:
            raise TrainingError(f"--embeddings: rows have different widths {sorted(lengths)[:5]}")
        width = lengths.pop() if lengths else 0
        flat = column.flatten().to_numpy(zero_copy_only=False)
    else:
        raise TrainingError(
            f"--embeddings: column embedding must be a list of floats, not {column.type}"
        )
    embeddings = check_embeddings(
        np.asarray(flat, dtype=np.float32).reshape(len(table), width), dim, embedding_model
    )
    image_ids = table.column("image_id").to_numpy(zero_copy_only=False).astype(np.int64)
    if "group" in names:
        group_of = dict(
            zip(
                ratings.column("image_id").to_numpy(zero_copy_only=False).tolist(),
                ratings.column("group").to_numpy(zero_copy_only=False).astype(str).tolist(),
                strict=True,
            )
        )
        groups = np.array([group_of.get(int(i), f"image-{i}") for i in image_ids])
    else:
        groups = np.array([f"image-{i}" for i in image_ids])
    return TrainingData(
        panel=panel,
        image_ids=image_ids,
        embeddings=embeddings,
        groups=groups,
        embedding_model=embedding_model,
    )
