"""Exporting the current ratings to Parquet or JSON Lines, atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.atomic import atomic_file
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import Image, Rating, User

__all__ = ["EXPORT_COLUMNS", "ExportError", "current_ratings", "export_ratings"]

#: Exactly these columns, in this order (ids that are Discord snowflakes as strings).
EXPORT_COLUMNS = (
    "image_id",
    "job_id",
    "message_id",
    "rater_id",
    "value",
    "scale",
    "source",
    "updated_at",
)


class ExportError(DreamrateError):
    """The export cannot be written."""


async def current_ratings(engine: AsyncEngine) -> list[dict[str, Any]]:
    """One row per current rating of a member with a Discord id, images removed by moderators left out."""
    query = (
        select(
            Rating.image_id,
            Image.job_id,
            Image.discord_message_id,
            User.discord_id,
            Rating.value,
            Rating.scale,
            Rating.source,
            Rating.updated_at,
        )
        .join(Image, Image.id == Rating.image_id)
        .join(User, User.id == Rating.user_id)
        .where(Image.removed.is_(False), User.discord_id.is_not(None))
        .order_by(Rating.image_id, User.discord_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "image_id": row.image_id,
            "job_id": row.job_id,
            "message_id": None if row.discord_message_id is None else str(row.discord_message_id),
            "rater_id": str(row.discord_id),
            "value": float(row.value),
            "scale": row.scale,
            "source": row.source,
            "updated_at": row.updated_at,
        }
        for row in rows
    ]


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("image_id", pa.int64()),
            ("job_id", pa.int64()),
            ("message_id", pa.string()),
            ("rater_id", pa.string()),
            ("value", pa.float64()),
            ("scale", pa.string()),
            ("source", pa.string()),
            ("updated_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(
                json.dumps({**row, "updated_at": row["updated_at"].isoformat()}, ensure_ascii=False)
                + "\n"
            )


async def export_ratings(engine: AsyncEngine, out: Path) -> int:
    """Write the current ratings to ``out`` (``.parquet`` or ``.jsonl``); return the row count.

    The file appears whole or not at all (written beside it, then renamed).

    Raises
    ------
    ExportError
        for another extension or a folder that cannot be written.
    """
    writers = {".parquet": _write_parquet, ".jsonl": _write_jsonl}
    writer = writers.get(out.suffix.lower())
    if writer is None:
        raise ExportError(f"--out: the file must end in .parquet or .jsonl, not {out.name!r}")
    rows = await current_ratings(engine)
    with atomic_file(out, ExportError) as tmp:
        writer(rows, tmp)
    return len(rows)
