"""Training data: the community's counted ratings with their images' embeddings, from the
database or from Parquet files (this project's exports, public datasets)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import Choice, Embedding, Image, Job, Rating
from dreamrate.ratings.aggregate import RatingPanel
from dreamrate.ratings.choices import ChoicePanel
from dreamrate.ratings.policy import counted_choices, counted_image, counted_ratings, in_guilds
from dreamrate.ratings.schema import RATING_COLUMNS, REQUIRED_COLUMNS, prompt_group

__all__ = [
    "COMPARISON_COLUMNS",
    "TrainingData",
    "TrainingError",
    "check_embeddings",
    "load_database_data",
    "load_file_data",
    "load_files",
]

#: The comparisons file: one row per click (``group_a``, ``group_b``, ``timestamp`` optional).
COMPARISON_COLUMNS = ("image_a", "image_b", "rater_id", "winner")


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
    #: Pairwise choices ("which of these two?"), when there are any
    comparisons: ChoicePanel | None = None


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


async def load_database_data(
    engine: AsyncEngine,
    *,
    embedding_model: str,
    scale: str,
    images_dir: Path | None = None,
    guilds: Sequence[int] | None = None,
) -> TrainingData:
    """Current ratings on ``scale`` and ``embedding_model`` embeddings of rated images, of
    the images made in ``guilds`` (default: every guild).

    Only ratings that count are used (:mod:`dreamrate.ratings.policy`).
    """
    ratings_q = (
        counted_ratings(
            Rating.image_id,
            Rating.user_id,
            Rating.value,
            Rating.rated_at,
            leaving=False,
            guilds=guilds,
        )
        .where(Rating.scale == scale)
        .order_by(Rating.id)
    )
    emb_q = (
        select(Embedding.image_id, Embedding.dim, Embedding.vector, Image.path, Job.prompt)
        .join(Image, Image.id == Embedding.image_id)
        .join(Job, Job.id == Image.job_id)
        .where(Embedding.model == embedding_model, counted_image(leaving=False), in_guilds(guilds))
        .order_by(Embedding.image_id)
    )
    choices_q = counted_choices(
        Choice.image_a_id,
        Choice.image_b_id,
        Choice.user_id,
        Choice.winner,
        leaving=False,
        guilds=guilds,
    ).order_by(Choice.id)
    async with engine.connect() as conn:
        ratings = (await conn.execute(ratings_q)).all()
        embedded = (await conn.execute(emb_q)).all()
        chosen = (await conn.execute(choices_q)).all()
    panel = RatingPanel.from_columns(
        [r.image_id for r in ratings],
        [r.user_id for r in ratings],
        [r.value for r in ratings],
        # Only live ratings carry the member's own time; backfill's finds carry none.
        [r.rated_at.timestamp() if r.rated_at else float("nan") for r in ratings],
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
    # Choices between two embedded images (`dreamrate embed` covers the rest later).
    chosen = [c for c in chosen if c.image_a_id in paths and c.image_b_id in paths]
    comparisons = (
        ChoicePanel.from_columns(
            [c.image_a_id for c in chosen],
            [c.image_b_id for c in chosen],
            [str(c.user_id) for c in chosen],  # the member's row id, as the ratings' rater_id
            [c.winner for c in chosen],
        )
        if chosen
        else None
    )
    return TrainingData(
        panel=panel,
        image_ids=np.array([row.image_id for row in embedded], dtype=np.int64),
        embeddings=embeddings,
        groups=np.array([prompt_group(row.prompt) for row in embedded]),
        embedding_model=embedding_model,
        image_paths=paths,
        comparisons=comparisons,
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
        ) from exc


def _seconds(column: Any) -> np.ndarray | None:
    """``rated_at`` as seconds since the epoch, for the speed check; None unless every rating
    has a time. Any timestamp unit is accepted.

    Raises
    ------
    ValueError
        when the column is not a timestamp.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_timestamp(column.type):
        raise ValueError(f"rated_at must be a timestamp, not {column.type}")
    if column.null_count:
        return None
    micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
    seconds = micros.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
    if len(seconds) and not np.any(seconds % 86_400):
        return None  # days only (this project's exports): no evidence of anyone's speed
    return seconds


def load_file_data(
    ratings_path: Path, embeddings_path: Path, *, embedding_model: str, dim: int | None
) -> TrainingData:
    """Ratings in the rating schema (:mod:`dreamrate.ratings.schema`: ``image_id``,
    ``rater_id``, ``rating``, optional ``rated_at`` and ``group``; what ``ratings export``
    and ``export dataset`` write) and ``embeddings.parquet`` (``image_id``, ``embedding``)."""
    import pyarrow as pa

    ratings = _read_table(ratings_path, "--ratings")
    names = set(ratings.column_names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        renamed = " (`value` is now `rating`: export again)" if "value" in names else ""
        raise TrainingError(
            f"--ratings: {ratings_path} lacks column(s) {', '.join(missing)}{renamed} "
            f"(the rating schema is {', '.join(RATING_COLUMNS)})"
        )

    def values_of(name: str) -> np.ndarray:
        return ratings.column(name).to_numpy(zero_copy_only=False)

    try:
        stamps = _seconds(ratings.column("rated_at")) if "rated_at" in names else None
        panel = RatingPanel.from_columns(
            values_of("image_id").astype(np.int64),
            values_of("rater_id").astype(str),
            values_of("rating").astype(np.float64),
            stamps,
        )
    except (ValueError, TypeError, pa.ArrowException) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TrainingError(f"--ratings: {first[:200]}") from exc

    image_ids, embeddings = _read_embeddings(
        embeddings_path, embedding_model=embedding_model, dim=dim
    )
    # Images without a group are their own group (validation cannot do better for them).
    group_of = (
        {
            int(i): str(g)
            for i, g in zip(
                values_of("image_id").tolist(), ratings.column("group").to_pylist(), strict=True
            )
            if g is not None
        }
        if "group" in names
        else {}
    )
    groups = np.array([group_of.get(int(i), f"image-{i}") for i in image_ids])
    return TrainingData(
        panel=panel,
        image_ids=image_ids,
        embeddings=embeddings,
        groups=groups,
        embedding_model=embedding_model,
    )


def _comparisons(path: Path) -> tuple[ChoicePanel, dict[int, str]]:
    """The comparisons file, and the prompt group of each image it names (if given)."""
    import pyarrow as pa

    table = _read_table(path, "--comparisons")
    names = set(table.column_names)
    missing = [c for c in COMPARISON_COLUMNS if c not in names]
    if missing:
        raise TrainingError(
            f"--comparisons: {path} lacks column(s) {', '.join(missing)} "
            f"(needs {', '.join(COMPARISON_COLUMNS)}; group_a, group_b, timestamp optional)"
        )

    def values_of(name: str) -> list[Any]:
        return table.column(name).to_pylist()

    try:
        for column in ("image_a", "image_b", "rater_id", "winner"):
            if table.column(column).null_count:
                raise ValueError(f"{column} has {table.column(column).null_count} empty value(s)")
        panel = ChoicePanel.from_columns(
            np.asarray(values_of("image_a"), dtype=np.int64),
            np.asarray(values_of("image_b"), dtype=np.int64),
            [str(r) for r in values_of("rater_id")],
            [str(w) for w in values_of("winner")],
        )
    except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise TrainingError(f"--comparisons: {first[:200]}") from exc
    groups: dict[int, str] = {}
    for side in ("a", "b"):
        if f"group_{side}" in names:
            for i, g in zip(values_of(f"image_{side}"), values_of(f"group_{side}"), strict=True):
                if g is not None:
                    groups[int(i)] = str(g)
    return panel, groups


def load_files(
    ratings_path: Path | None,
    comparisons_path: Path | None,
    embeddings_path: Path,
    *,
    embedding_model: str,
    dim: int | None,
) -> TrainingData:
    """Ratings (the rating schema) and/or comparisons (:data:`COMPARISON_COLUMNS`, one row
    per click) with ``embeddings.parquet``, which must hold every image either file names.
    A ``rater_id`` in both files is the same member."""
    if ratings_path is None and comparisons_path is None:
        raise TrainingError("give --ratings, --comparisons or both, with --embeddings")
    if ratings_path is not None:
        data = load_file_data(
            ratings_path, embeddings_path, embedding_model=embedding_model, dim=dim
        )
    else:
        data = _embeddings_only(embeddings_path, embedding_model=embedding_model, dim=dim)
    if comparisons_path is None:
        return data
    panel, groups = _comparisons(comparisons_path)
    have = set(data.image_ids.tolist())
    named = set(panel.image_a.tolist()) | set(panel.image_b.tolist())
    lacking = sorted(named - have)
    if lacking:
        raise TrainingError(
            f"--comparisons: {len(lacking)} image(s) have no embedding in {embeddings_path} "
            f"(first: {lacking[0]})"
        )
    # A group from the comparisons fills in what the ratings did not say.
    merged = np.array(
        [
            groups.get(int(i), g) if g == f"image-{i}" else g
            for i, g in zip(data.image_ids.tolist(), data.groups.tolist(), strict=True)
        ]
    )
    return TrainingData(
        panel=data.panel,
        image_ids=data.image_ids,
        embeddings=data.embeddings,
        groups=merged,
        embedding_model=data.embedding_model,
        image_paths=data.image_paths,
        comparisons=panel,
    )


def _embeddings_only(path: Path, *, embedding_model: str, dim: int | None) -> TrainingData:
    """The embeddings file with an empty rating panel (training on choices alone)."""
    image_ids, embeddings = _read_embeddings(path, embedding_model=embedding_model, dim=dim)
    return TrainingData(
        panel=RatingPanel.from_columns([], [], []),
        image_ids=image_ids,
        embeddings=embeddings,
        groups=np.array([f"image-{i}" for i in image_ids.tolist()]),
        embedding_model=embedding_model,
    )


def _read_embeddings(
    embeddings_path: Path, *, embedding_model: str, dim: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``embeddings.parquet`` (``image_id``, ``embedding``): ids and an ``(n, dim)`` array."""
    import pyarrow as pa

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
    return image_ids, embeddings
