"""From score files to a filtered manifest that img2dataset and training code read directly.

The kept rows keep the scores' order (shard N, then row), so the same scores and threshold
always give the same files. ``--top-fraction`` finds the exact cut with bounded memory:
one pass for the range, one for a fine histogram, one for the values in the cut's bin.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.aesthetic.filtering.threshold import (
    HISTOGRAM_BINS,
    bin_mask,
    cut_bin,
    kth_largest,
    rows_to_keep,
)
from dreamrate.aesthetic.filtering.writer import META_PREDICTOR, META_PREDICTOR_HASH
from dreamrate.core.atomic import atomic_folder
from dreamrate.core.errors import DreamrateError

__all__ = ["ManifestError", "export_manifest", "score_files"]

ROW_GROUP = 131_072
_SCORES = re.compile(r"^scores_(\d+)\.parquet$")


class ManifestError(DreamrateError):
    """The scores cannot be turned into a manifest."""


def score_files(scores: Path) -> list[Path]:
    """``scores_N.parquet`` files in N order."""
    if not scores.is_dir():
        raise ManifestError(f"--scores: {scores} is not a folder (run `dreamrate score` first)")
    files = [p for p in scores.iterdir() if _SCORES.match(p.name)]
    if not files:
        raise ManifestError(f"--scores: no scores_N.parquet files in {scores}")
    return sorted(files, key=lambda p: int(_SCORES.match(p.name).group(1)))  # type: ignore[union-attr]


def _aesthetic(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["aesthetic"]).column(0)
    return column.to_numpy(zero_copy_only=False).astype(np.float32)  # nulls become NaN


def _top_threshold(files: list[Path], fraction: float, lo: float, hi: float, valid: int) -> float:
    keep = rows_to_keep(fraction, valid)
    if hi <= lo:
        return lo
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    for path in files:
        values = _aesthetic(path)
        counts += np.histogram(values[np.isfinite(values)], bins=edges)[0]
    top_bin, rank = cut_bin(counts, keep)
    inside = [v[bin_mask(v, edges, top_bin)] for v in map(_aesthetic, files)]
    return kth_largest(np.concatenate(inside), rank)


class _PartWriter:
    """Rows in order into part-NNNNN.parquet files of at most ``rows_per_file`` rows."""

    def __init__(self, folder: Path, rows_per_file: int) -> None:
        self.folder, self.rows_per_file = folder, rows_per_file
        self.writer: Any = None
        self.in_file = 0
        self.files: list[dict[str, Any]] = []
        self.buffer: list[Any] = []
        self.buffered = 0

    def _open(self, schema: Any) -> None:
        import pyarrow.parquet as pq

        name = f"part-{len(self.files):05d}.parquet"
        self.writer = pq.ParquetWriter(self.folder / name, schema, compression="zstd")
        self.files.append({"name": name, "rows": 0})
        self.in_file = 0

    def _flush(self) -> None:
        import pyarrow as pa

        if not self.buffered:
            return
        table = pa.concat_tables(self.buffer)
        self.buffer, self.buffered = [], 0
        if self.writer is None:
            self._open(table.schema)
        self.writer.write_table(table, row_group_size=ROW_GROUP)
        self.in_file += len(table)
        self.files[-1]["rows"] = self.in_file
        if self.in_file >= self.rows_per_file:
            self.writer.close()
            self.writer = None
            self.in_file = 0

    def write(self, table: Any) -> None:
        while len(table):
            room = min(ROW_GROUP - self.buffered, self.rows_per_file - self.in_file - self.buffered)
            piece, table = table.slice(0, room), table.slice(room)
            self.buffer.append(piece)
            self.buffered += len(piece)
            if self.buffered >= ROW_GROUP or self.in_file + self.buffered >= self.rows_per_file:
                self._flush()

    def close(self) -> list[dict[str, Any]]:
        self._flush()
        if self.writer is not None:
            self.writer.close()
        return self.files


def export_manifest(
    scores: Path,
    out: Path,
    *,
    min_score: float | None = None,
    top_fraction: float | None = None,
    rows_per_file: int = 5_000_000,
    force: bool = False,
) -> dict[str, Any]:
    """Write ``out/part-NNNNN.parquet`` and ``out/manifest.json``; return the manifest."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = score_files(scores)
    if out.exists() and not force:
        raise ManifestError(f"--out: {out} already exists (choose another folder or --force)")
    predictor_ids, hashes = set(), set()
    for path in files:
        meta = pq.read_metadata(path).metadata or {}
        predictor_ids.add(meta.get(META_PREDICTOR, b"?").decode())
        hashes.add(meta.get(META_PREDICTOR_HASH, b"?").decode())
    if len(predictor_ids) > 1 or len(hashes) > 1:
        raise ManifestError(
            f"--scores: files come from different predictors {sorted(predictor_ids)}; "
            "rescore with one (dreamrate score --force)"
        )
    lo, hi, rows_in, valid = math.inf, -math.inf, 0, 0
    for path in files:
        values = _aesthetic(path)
        finite = values[np.isfinite(values)]
        rows_in += len(values)
        valid += len(finite)
        if len(finite):
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if valid == 0:
        raise ManifestError("--scores: no row has a score (every embedding was NaN/inf?)")
    threshold = (
        float(min_score)
        if min_score is not None
        else _top_threshold(files, float(top_fraction or 1), lo, hi, valid)
    )
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 21)
    histogram = np.zeros(20, dtype=np.int64)

    with atomic_folder(out, ManifestError, overwrite=force) as tmp:
        writer = _PartWriter(tmp, rows_per_file)
        columns: list[str] = []
        for path in files:
            table = pq.read_table(path)
            columns = table.column_names
            values = table.column("aesthetic").to_numpy(zero_copy_only=False).astype(np.float32)
            histogram += np.histogram(values[np.isfinite(values)], bins=edges)[0]
            kept = table.filter(pc.greater_equal(table.column("aesthetic"), threshold))
            writer.write(kept.replace_schema_metadata(None))
        parts = writer.close()
        rows_out = sum(p["rows"] for p in parts)
        manifest = {
            "format": "dreamrate-manifest",
            "version": 1,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "predictor": {"id": predictor_ids.pop(), "sha256": hashes.pop()},
            "selection": {
                "mode": "min_score" if min_score is not None else "top_fraction",
                "value": min_score if min_score is not None else top_fraction,
                "threshold": threshold,
            },
            "source_shards": [p.name for p in files],
            "rows_in": rows_in,
            "rows_null": rows_in - valid,
            "rows_out": rows_out,
            "columns": columns,
            "files": parts,
            "histogram": {"edges": [float(e) for e in edges], "counts": histogram.tolist()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {**manifest, "threshold": threshold}
