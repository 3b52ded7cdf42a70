"""The one rating schema: what ``ratings export`` writes, the dataset's ``ratings.parquet``
holds, and ``dreamrate train --ratings`` reads.

One row per current rating:

============  ==========================  ===================================================
column        type                        meaning
============  ==========================  ===================================================
image_id      int64                       the rated image
rater_id      string                      the rater (a Discord id, or a pseudonym in datasets)
rating        float64                     the rating, on ``scale``
scale         string (nullable)           the rating scale's name, e.g. ``numbers-10``
rated_at      timestamp[us, UTC] (null.)  the day the rating was last set (midnight UTC:
                                          exports never carry finer times, which could
                                          link one rater across exports)
group         string (nullable)           the prompt group: images of one prompt share it,
                                          so validation never splits them
============  ==========================  ===================================================

Writers may add columns after these (``ratings export`` adds ``job_id``, ``message_id`` and
``source``); readers need only ``image_id``, ``rater_id`` and ``rating``.

Choices between two images (``comparisons export``, the dataset's ``comparisons.parquet``,
``dreamrate train --comparisons``) have their own schema, one row per current choice:
``image_a``, ``image_b`` (int64: left and right), ``rater_id`` (string), ``winner``
(``a``, ``b`` or ``tie``), ``group_a``, ``group_b`` (prompt groups) and ``timestamp`` (the
day, as ``rated_at``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dreamrate.core.atomic import atomic_file
from dreamrate.core.errors import DreamrateError

__all__ = [
    "CHOICE_EXPORT_COLUMNS",
    "RATING_COLUMNS",
    "REQUIRED_COLUMNS",
    "choice_schema",
    "on_the_day",
    "prompt_group",
    "rating_schema",
    "write_ratings",
    "write_rows",
]

RATING_COLUMNS = ("image_id", "rater_id", "rating", "scale", "rated_at", "group")
REQUIRED_COLUMNS = ("image_id", "rater_id", "rating")
CHOICE_EXPORT_COLUMNS = (
    "image_a",
    "image_b",
    "rater_id",
    "winner",
    "group_a",
    "group_b",
    "timestamp",
)
#: File types the writers produce, by suffix.
FORMATS = (".parquet", ".jsonl")


def prompt_group(prompt: str) -> str:
    """Images of the same prompt (up to case and spacing) share a validation group."""
    return hashlib.sha1(" ".join(prompt.lower().split()).encode()).hexdigest()[:16]


def on_the_day(moment: datetime | None) -> datetime | None:
    """``moment`` coarsened to its day (midnight UTC), as every export writes times."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def rating_schema(extra: Sequence[tuple[str, Any]] = ()) -> Any:
    """The pyarrow schema of :data:`RATING_COLUMNS`, then ``extra`` ``(name, type)`` columns."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("image_id", pa.int64(), nullable=False),
            pa.field("rater_id", pa.string(), nullable=False),
            pa.field("rating", pa.float64(), nullable=False),
            ("scale", pa.string()),
            ("rated_at", pa.timestamp("us", tz="UTC")),
            ("group", pa.string()),
            *extra,
        ]
    )


def write_ratings(
    rows: list[dict[str, Any]],
    out: Path,
    error: type[DreamrateError],
    *,
    extra: Sequence[tuple[str, Any]] = (),
) -> int:
    """Write ``rows`` (dicts with the schema's keys) to ``out`` (``.parquet`` or ``.jsonl``)
    atomically; return the row count.

    Raises
    ------
    error
        for another suffix, or a file that cannot be written.
    """
    return write_rows(rows, out, error, rating_schema(extra), time_column="rated_at")


def choice_schema(extra: Sequence[tuple[str, Any]] = ()) -> Any:
    """The pyarrow schema of :data:`CHOICE_EXPORT_COLUMNS`, then ``extra`` columns."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("image_a", pa.int64(), nullable=False),
            pa.field("image_b", pa.int64(), nullable=False),
            pa.field("rater_id", pa.string(), nullable=False),
            pa.field("winner", pa.string(), nullable=False),
            ("group_a", pa.string()),
            ("group_b", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            *extra,
        ]
    )


def write_rows(
    rows: list[dict[str, Any]],
    out: Path,
    error: type[DreamrateError],
    schema: Any,
    *,
    time_column: str,
) -> int:
    """Write ``rows`` in ``schema`` to ``out`` (``.parquet`` or ``.jsonl``) atomically."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise error(f"--out: the file must end in .parquet or .jsonl, not {out.name!r}")
    with atomic_file(out, error) as tmp:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
        else:
            with tmp.open("w", encoding="utf-8") as handle:
                for row in rows:
                    stamp = row.get(time_column)
                    shown = {**row, time_column: stamp.isoformat() if stamp else None}
                    handle.write(json.dumps(shown, ensure_ascii=False) + "\n")
    return len(rows)
