"""From score files to a filtered manifest that img2dataset and training code read directly.

The kept rows keep the scores' order (shard N, then row), so the same scores and threshold
always give the same files. ``--top-fraction`` finds the exact cut with bounded memory:
one pass for the range, one for a fine histogram, one for the values in the cut's bin.

The cut is found from the scores alone. Score files that are sidecars (``aesthetic`` only,
the default) get their metadata from the source shard their footer names, and only the
columns asked for of only the kept rows are read (row groups without a kept row are
skipped); a source that changed since scoring is refused, naming the shard. Score files
with metadata joined in (``score --columns``) are read as they are.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.aesthetic.filtering.exclusions import Exclusions
from dreamrate.aesthetic.filtering.reader import open_source, source_identity
from dreamrate.aesthetic.filtering.threshold import (
    HISTOGRAM_BINS,
    bin_mask,
    cut_bin,
    kth_largest,
    rows_to_keep,
)
from dreamrate.aesthetic.filtering.writer import (
    DEFAULT_COLUMNS,
    META_PREDICTOR,
    META_PREDICTOR_HASH,
    float32_values,
    numpy_column,
    shard_footer,
)
from dreamrate.core.atomic import atomic_folder
from dreamrate.core.errors import DreamrateError

__all__ = ["ManifestError", "export_manifest", "score_files"]

ROW_GROUP = 131_072
#: Shards read ahead of the writer.
READ_AHEAD = 3
#: Bytes of scores the cut keeps in memory between its passes (past it, files are re-read).
CACHE_BYTES = 1 << 30
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


class _Scores:
    """Each score file's ``aesthetic`` column as float32 (nulls as NaN), read once and kept
    while they fit in ``budget`` bytes (4 bytes a row: 1 GiB holds 268M rows), re-read past
    it, so the cut's passes cost one read at any size that fits and stay bounded beyond."""

    def __init__(self, budget: int = CACHE_BYTES) -> None:
        self.budget = budget
        self.kept: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        import pyarrow.parquet as pq

        if path in self.kept:
            return self.kept[path]
        values = float32_values(pq.ParquetFile(path).read(columns=["aesthetic"]).column(0))
        if values.nbytes <= self.budget:
            self.kept[path] = values
            self.budget -= values.nbytes
        return values


def _top_threshold(
    files: list[Path], fraction: float, lo: float, hi: float, valid: int, scores: _Scores
) -> float:
    keep = rows_to_keep(fraction, valid)
    if hi <= lo:
        return lo
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    for path in files:
        values = scores(path)
        counts += np.histogram(values[np.isfinite(values)], bins=edges)[0]
    top_bin, rank = cut_bin(counts, keep)
    inside = [v[bin_mask(v, edges, top_bin)] for v in map(scores, files)]
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


class _Sidecar:
    """A sidecar score file's source metadata shard, checked against the footer up front and
    opened only while its kept rows are read (thousands of shards, a handful of open files)."""

    def __init__(self, path: Path, footer: dict[str, Any], rows: int) -> None:
        self.path, self.rows_expected = path, rows
        self.url = url = footer["metadata"]["url"]
        try:
            identity = source_identity(url)
        except OSError:
            raise ManifestError(
                f"--scores: {path.name}: its metadata shard {url} is missing "
                "(move the source back, or rescore)"
            ) from None
        if identity != footer["metadata"]["identity"] or footer["rows"] != rows:
            raise ManifestError(
                f"--scores: {path.name} is stale: its source {url} changed since it was scored "
                "(rescore: dreamrate score)"
            )

    def read(self, kept: np.ndarray, wanted: tuple[str, ...] | None) -> Any:
        """The ``wanted`` columns (default: url, caption, key, hash, those present) of rows
        ``kept`` (sorted row numbers), reading only the row groups that hold one."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            handle = open_source(self.url)
        except OSError:
            raise ManifestError(f"--scores: {self.path.name}: cannot open {self.url}") from None
        with handle:
            file = pq.ParquetFile(handle)
            if file.metadata.num_rows != self.rows_expected:
                raise ManifestError(
                    f"--scores: {self.path.name} has {self.rows_expected} rows but {self.url} "
                    f"has {file.metadata.num_rows} (rescore: dreamrate score)"
                )
            names = file.schema_arrow.names
            if wanted is None:
                columns = [c for c in DEFAULT_COLUMNS if c in names]
            else:
                missing = [c for c in wanted if c not in names]
                if missing:
                    raise ManifestError(
                        f"--columns: {', '.join(missing)} not in the metadata of {self.path.name}"
                    )
                columns = list(wanted)
            pieces, start = [], 0
            for group in range(file.num_row_groups):
                size = file.metadata.row_group(group).num_rows
                lo, hi = np.searchsorted(kept, [start, start + size])
                if hi > lo:
                    table = file.read_row_group(group, columns=columns, use_threads=False)
                    pieces.append(table.take(numpy_column(kept[lo:hi] - start)))
                start += size
            if not pieces:
                return file.schema_arrow.empty_table().select(columns)
            return pa.concat_tables(pieces)


def export_manifest(
    scores: Path,
    out: Path,
    *,
    min_score: float | None = None,
    top_fraction: float | None = None,
    rows_per_file: int = 5_000_000,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
    exclusions: Exclusions | None = None,
) -> dict[str, Any]:
    """Write ``out/part-NNNNN.parquet`` and ``out/manifest.json``; return the manifest.

    ``columns`` are the metadata columns a manifest from sidecars carries (default: url,
    caption, key, hash, those present), before ``aesthetic``. ``exclusions`` (opt-out
    lists) drop rows after the cut: the cut is found from the scores alone, so a
    ``--top-fraction`` manifest keeps that fraction less what the lists name."""
    exclusions = exclusions or Exclusions()
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = score_files(scores)
    if out.exists() and not force:
        raise ManifestError(f"--out: {out} already exists (choose another folder or --force)")
    predictor_ids, hashes = set(), set()
    footers: dict[Path, dict[str, Any] | None] = {}
    joined: dict[Path, bool] = {}
    for path in files:
        file_meta = pq.read_metadata(path)
        meta = file_meta.metadata or {}
        predictor_ids.add(meta.get(META_PREDICTOR, b"?").decode())
        hashes.add(meta.get(META_PREDICTOR_HASH, b"?").decode())
        footers[path] = shard_footer(file_meta)
        joined[path] = file_meta.schema.to_arrow_schema().names != ["aesthetic"]
    if len(set(joined.values())) > 1:
        raise ManifestError(
            "--scores: some score files carry metadata (score --columns) and some do not; "
            "rescore them one way"
        )
    sidecars = not next(iter(joined.values()))
    if sidecars and any(f is None for f in footers.values()):
        raise ManifestError("--scores: a score file names no source shard; rescore it")
    if len(predictor_ids) > 1 or len(hashes) > 1:
        raise ManifestError(
            f"--scores: files come from different predictors {sorted(predictor_ids)}; "
            "rescore with one (dreamrate score --force)"
        )
    lo, hi, rows_in, valid = math.inf, -math.inf, 0, 0
    read_scores = _Scores()
    for path in files:
        values = read_scores(path)
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
        else _top_threshold(files, float(top_fraction or 1), lo, hi, valid, read_scores)
    )
    if threshold > hi:
        raise ManifestError(
            f"--min-score {threshold:g} keeps no row (scores run from {lo:.4g} to {hi:.4g}); "
            "nothing written"
        )
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 21)
    histogram = np.zeros(20, dtype=np.int64)
    # Every source is checked before anything is written.
    sources = (
        {path: _Sidecar(path, footers[path], pq.read_metadata(path).num_rows) for path in files}  # type: ignore[arg-type]
        if sidecars
        else {}
    )

    with atomic_folder(out, ManifestError, overwrite=force) as tmp:
        writer = _PartWriter(tmp, rows_per_file)
        names: list[str] = []

        def kept_rows(path: Path) -> tuple[Any, np.ndarray]:
            values = read_scores(path)
            if sidecars:
                # Compared in float64, as the joined files' filter compares (NaN: False).
                keep = np.flatnonzero(values.astype(np.float64) >= threshold)
                kept = sources[path].read(keep, columns)
                kept = kept.append_column("aesthetic", numpy_column(values[keep]))
            else:
                table = pq.ParquetFile(path).read()
                kept = table.filter(pc.greater_equal(table.column("aesthetic"), threshold))
            return kept, values

        # Shards are read on two threads (Parquet decoding releases the GIL), a couple
        # ahead of the writer, which takes them in order.
        with ThreadPoolExecutor(2) as pool:
            ahead: deque[Any] = deque()
            queue = iter(files)
            for path in itertools.islice(queue, READ_AHEAD):
                ahead.append(pool.submit(kept_rows, path))
            while ahead:
                kept, values = ahead.popleft().result()
                for path in itertools.islice(queue, 1):
                    ahead.append(pool.submit(kept_rows, path))
                histogram += np.histogram(values[np.isfinite(values)], bins=edges)[0]
                names = kept.column_names
                writer.write(exclusions.filter(kept).replace_schema_metadata(None))
        parts = writer.close()
        if exclusions and not any(p["rows"] for p in parts):
            raise ManifestError("the exclusion lists drop every kept row; nothing written")
        columns_out = names
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
            "excluded": dict(exclusions.dropped),
            "columns": columns_out,
            "files": parts,
            "histogram": {"edges": [float(e) for e in edges], "counts": histogram.tolist()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {**manifest, "threshold": threshold}
