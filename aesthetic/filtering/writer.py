"""Writer: score files, ``scores_N.parquet``, one per source shard, whole or absent.

A score file holds the kept metadata columns and ``aesthetic`` (float32, null where the
embedding was NaN/inf), row-aligned with its source shard. Its footer names the predictor
(id and fingerprint) and the source file, so reruns and manifests can tell whose scores
they hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.aesthetic.predictor import Predictor
from dreamrate.core.atomic import atomic_file
from dreamrate.core.errors import DreamrateError

__all__ = [
    "META_PREDICTOR",
    "META_PREDICTOR_HASH",
    "META_SOURCE",
    "ScoreWriteError",
    "existing_output_ok",
    "scores_table",
    "write_scores",
]

META_PREDICTOR = b"dreamrate.predictor_id"
META_PREDICTOR_HASH = b"dreamrate.predictor_sha256"
META_SOURCE = b"dreamrate.source"


class ScoreWriteError(DreamrateError):
    """A score file cannot be written."""


def scores_table(metadata: Any, scores: np.ndarray, predictor: Predictor, source: str) -> Any:
    """``metadata`` with the ``aesthetic`` column appended and the footer that names the run."""
    import pyarrow as pa

    bad = ~np.isfinite(scores)
    aesthetic = pa.array(scores, type=pa.float32(), mask=bad if bad.any() else None)
    table = (
        metadata.append_column("aesthetic", aesthetic)
        if metadata.num_columns
        else pa.table({"aesthetic": aesthetic})
    )
    return table.replace_schema_metadata(
        {
            META_PREDICTOR: predictor.id.encode(),
            META_PREDICTOR_HASH: predictor.sha256.encode(),
            META_SOURCE: Path(source).name.encode(),
        }
    )


def write_scores(table: Any, final: Path) -> None:
    """Write ``table`` to ``final`` atomically.

    Raises
    ------
    ScoreWriteError
        when the file cannot be written (nothing is left behind).
    """
    import pyarrow.parquet as pq

    with atomic_file(final, ScoreWriteError) as tmp:
        # Unique strings gain nothing from dictionaries; statistics only where filters use them.
        pq.write_table(
            table, tmp, compression="zstd", use_dictionary=False, write_statistics=["aesthetic"]
        )


def existing_output_ok(path: Path, rows: int, predictor: Predictor) -> bool:
    """True when ``path`` holds a whole shard scored by ``predictor`` (same fingerprint)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (OSError, ValueError):
        return False
    footer = meta.metadata or {}
    return (
        meta.num_rows == rows
        and footer.get(META_PREDICTOR, b"").decode() == predictor.id
        and footer.get(META_PREDICTOR_HASH, b"").decode() == predictor.sha256
    )
