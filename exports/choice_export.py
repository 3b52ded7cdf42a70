"""``dreamrate comparisons export``: the current choices that count, in the choice schema
(:mod:`dreamrate.ratings.schema`), which ``dreamrate train --comparisons`` reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import Choice, Image, Job, User
from dreamrate.ratings.policy import counted_choices
from dreamrate.ratings.schema import choice_schema, on_the_day, prompt_group, write_rows

__all__ = ["ComparisonExportError", "current_choices", "export_choices"]


class ComparisonExportError(DreamrateError):
    """The comparisons file cannot be written."""


async def current_choices(
    engine: AsyncEngine, *, guilds: Sequence[int] | None = None, leaving: bool = True
) -> list[dict[str, Any]]:
    """One row per current choice that counts (:func:`~dreamrate.ratings.policy.counted_choices`)
    of images made in ``guilds`` (default: all): the choice schema plus ``message_id`` and
    ``user_id`` (the member's row, for pseudonyms; never written by the export)."""
    right_image, right_job = aliased(Image), aliased(Job)
    query = (
        counted_choices(
            Choice.image_a_id,
            Choice.image_b_id,
            Choice.user_id,
            User.discord_id,
            Choice.winner,
            Choice.chosen_at,
            Choice.updated_at,
            Choice.message_id,
            Job.prompt.label("prompt_a"),
            right_job.prompt.label("prompt_b"),
            leaving=leaving,
            guilds=guilds,
        )
        .join(right_image, right_image.id == Choice.image_b_id)
        .join(right_job, right_job.id == right_image.job_id)
        .order_by(Choice.message_id, Choice.user_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "image_a": row.image_a_id,
            "image_b": row.image_b_id,
            "rater_id": str(row.discord_id) if row.discord_id is not None else f"u{row.user_id}",
            "winner": row.winner,
            "group_a": prompt_group(row.prompt_a),
            "group_b": prompt_group(row.prompt_b),
            "timestamp": on_the_day(row.chosen_at or row.updated_at),
            "message_id": str(row.message_id),
            "user_id": row.user_id,
            # Exact time, for training's time weights only (never written to a file).
            "chosen_at": row.chosen_at,
        }
        for row in rows
    ]


def _extra() -> list[tuple[str, Any]]:
    import pyarrow as pa

    return [("message_id", pa.string())]


async def export_choices(
    engine: AsyncEngine, out: Path, *, guilds: Sequence[int] | None = None
) -> int:
    """Write the current choices to ``out`` (``.parquet`` or ``.jsonl``); return the row
    count. The file appears whole or not at all.

    Raises
    ------
    ComparisonExportError
        for another extension or a folder that cannot be written.
    """
    rows = [
        {k: v for k, v in row.items() if k not in ("user_id", "chosen_at")}
        for row in await current_choices(engine, guilds=guilds)
    ]
    return write_rows(
        rows, out, ComparisonExportError, choice_schema(_extra()), time_column="timestamp"
    )
