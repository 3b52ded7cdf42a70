"""``dreamrate ratings export``: the current ratings that count, in the one rating schema."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import Image, Job, Rating, User
from dreamrate.ratings.policy import counted_ratings
from dreamrate.ratings.schema import RATING_COLUMNS, on_the_day, prompt_group, write_ratings

__all__ = ["EXPORT_COLUMNS", "EXPORT_EXTRA", "ExportError", "current_ratings", "export_ratings"]


def _extra() -> list[tuple[str, Any]]:
    import pyarrow as pa

    return [("job_id", pa.int64()), ("message_id", pa.string()), ("source", pa.string())]


#: What this export adds after the rating schema's columns (Discord ids as strings).
EXPORT_EXTRA = ("job_id", "message_id", "source")


class ExportError(DreamrateError):
    """The export cannot be written."""


async def current_ratings(
    engine: AsyncEngine, *, guilds: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """One row per current rating that counts (:mod:`dreamrate.ratings.policy`) of a member
    with a Discord id, of images made in ``guilds`` (default: all), in the rating schema
    plus :data:`EXPORT_EXTRA`."""
    query = (
        counted_ratings(
            Rating.image_id,
            User.discord_id,
            Rating.value,
            Rating.scale,
            Rating.rated_at,
            Rating.updated_at,
            Job.prompt,
            Image.job_id,
            Image.discord_message_id,
            Rating.source,
            leaving=True,
            guilds=guilds,
        )
        .where(User.discord_id.is_not(None))
        .order_by(Rating.image_id, User.discord_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "image_id": row.image_id,
            "rater_id": str(row.discord_id),
            "rating": float(row.value),
            "scale": row.scale,
            "rated_at": on_the_day(row.rated_at or row.updated_at),
            "group": prompt_group(row.prompt),
            "job_id": row.job_id,
            "message_id": None if row.discord_message_id is None else str(row.discord_message_id),
            "source": row.source,
        }
        for row in rows
    ]


#: Exactly these columns, in this order.
EXPORT_COLUMNS = (*RATING_COLUMNS, *EXPORT_EXTRA)


async def export_ratings(
    engine: AsyncEngine, out: Path, *, guilds: Sequence[int] | None = None
) -> int:
    """Write the current ratings to ``out`` (``.parquet`` or ``.jsonl``); return the row count.

    The file appears whole or not at all (written beside it, then renamed).

    Raises
    ------
    ExportError
        for another extension or a folder that cannot be written.
    """
    rows = await current_ratings(engine, guilds=guilds)
    return write_ratings(rows, out, ExportError, extra=_extra())
