"""Writer: score files, ``scores_N.parquet``, one per source shard, whole or absent.

A score file holds ``aesthetic`` (float32, null where the embedding was NaN/inf: the
validity mask), row-aligned with its source shard, and by default nothing else: it is a
sidecar, and ``export manifest`` reads the metadata of the kept rows from the source.
With ``--columns`` the named metadata columns are joined in before ``aesthetic``. The
footer names the predictor (id and fingerprint) and the source shard (its files and their
identity), so reruns and manifests can tell whose scores they hold and whether the source
has changed since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.aesthetic.predictor import Predictor
from dreamrate.core.atomic import atomic_file
from dreamrate.core.errors import DreamrateError

__all__ = [
    "DEFAULT_COLUMNS",
    "META_PREDICTOR",
    "META_PREDICTOR_HASH",
    "META_SHARD",
    "META_SOURCE",
    "ScoreWriteError",
    "existing_output_ok",
    "float32_values",
    "numpy_column",
    "scores_table",
    "shard_footer",
    "write_scores",
]

META_PREDICTOR = b"dreamrate.predictor_id"
META_PREDICTOR_HASH = b"dreamrate.predictor_sha256"
META_SOURCE = b"dreamrate.source"
#: JSON: the source shard's files and identities, ``{"embeddings": {"url", "identity"},
#: "metadata": {"url", "identity"}, "rows": N}`` (``metadata`` is the embeddings file itself
#: for a Parquet dataset).
META_SHARD = b"dreamrate.shard"


class ScoreWriteError(DreamrateError):
    """A score file cannot be written."""


#: Metadata columns a manifest carries by default (those present), in this order; score
#: files copy metadata only when asked (``--columns``).
DEFAULT_COLUMNS = ("url", "caption", "key", "hash")


def numpy_column(values: np.ndarray, *, valid: np.ndarray | None = None) -> Any:
    """A 1-d float32 or int64 ``values`` as an Arrow array on the same memory, null where
    ``valid`` is False. ``pa.array`` would import pandas to look for pandas types, a
    quarter of a second at every command's start."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    kind = {np.dtype(np.float32): pa.float32(), np.dtype(np.int64): pa.int64()}[values.dtype]
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = 0 if valid is None else len(valid) - int(np.count_nonzero(valid))
    return pa.Array.from_buffers(kind, len(values), [bitmap, pa.py_buffer(values)], nulls)


def float32_values(column: Any) -> np.ndarray:
    """A float32 Arrow (chunked) array as numpy, nulls as NaN, without pandas (which
    ``to_numpy`` imports for chunked arrays)."""
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    out = np.empty(len(column), dtype=np.float32)
    at = 0
    for chunk in chunks:
        if chunk.type != pa.float32():
            raise ScoreWriteError(f"the aesthetic column is {chunk.type}, not float")
        n, offset = len(chunk), chunk.offset
        validity, data = chunk.buffers()
        if n:
            out[at : at + n] = np.frombuffer(data, np.float32, count=n, offset=offset * 4)
        if chunk.null_count:
            bits = np.unpackbits(
                np.frombuffer(validity, np.uint8), count=offset + n, bitorder="little"
            )[offset:]
            out[at : at + n][bits == 0] = np.nan
        at += n
    return out


def scores_table(
    metadata: Any,
    scores: np.ndarray,
    predictor: Predictor,
    source: str,
    shard: dict[str, Any] | None = None,
) -> Any:
    """``metadata`` (no columns for a sidecar) with the ``aesthetic`` column appended, and
    the footer that names the run and the source ``shard``."""
    import json

    import pyarrow as pa

    bad = ~np.isfinite(scores)
    aesthetic = numpy_column(scores, valid=~bad if bad.any() else None)
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
            **({META_SHARD: json.dumps(shard, sort_keys=True).encode()} if shard else {}),
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


def shard_footer(meta: Any) -> dict[str, Any] | None:
    """The source shard a score file's footer names (None for files older than sidecars)."""
    import json

    raw = (meta.metadata or {}).get(META_SHARD)
    return None if raw is None else json.loads(raw)


def existing_output_ok(
    path: Path, rows: int, predictor: Predictor, shard: dict[str, Any] | None = None
) -> bool:
    """True when ``path`` holds a whole shard scored by ``predictor`` (same fingerprint),
    from the source ``shard`` as it is now (same identities), when given."""
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
        and (shard is None or shard_footer(meta) == shard)
    )
