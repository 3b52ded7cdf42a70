"""Scoring embedding shards with a predictor: one task per shard, bytes in, scores out.

An affine head (every trained Ridge and LAION's V2 head, folded) is one matrix-vector
product per chunk, computed straight from float16 chunks read into buffers allocated once
per shard; the L2 normalisation the predictor expects is applied to the product (divide
by the row norm) instead of rewriting the chunk. MLP heads run in batches through
preallocated layer buffers. Metadata is read on a second thread while the embeddings are
scored, and each output is written under a temporary name and renamed, so a file either
holds a whole shard or does not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aesthetic.predictor import Predictor
from aesthetic.shards import Shard

__all__ = [
    "DEFAULT_COLUMNS",
    "META_PREDICTOR",
    "ShardResult",
    "predictor_hash",
    "score_array",
    "score_shard",
]

#: Metadata columns copied to the scores by default (those present), in this order.
DEFAULT_COLUMNS = ("url", "caption", "key", "hash")
META_PREDICTOR = b"dreamrate.predictor_id"
META_PREDICTOR_HASH = b"dreamrate.predictor_sha256"
META_SOURCE = b"dreamrate.source"
CHUNK_ROWS = 8192


class ShardFailed(Exception):
    """A shard that cannot be scored; its message names the reason (one line)."""


@dataclass
class ShardResult:
    n: int
    output: str
    rows: int = 0
    null_rows: int = 0  #: NaN/inf embeddings, scored as null
    norm_min: float = float("inf")
    norm_max: float = 0.0
    skipped: bool = False  #: already scored by this predictor
    seconds: float = 0.0
    error: str | None = None
    worker: str = field(default_factory=lambda: f"pid {os.getpid()}")


def predictor_hash(predictor: Predictor) -> str:
    """sha256 of the predictor's weights (affine vector + bias, or every layer)."""
    digest = hashlib.sha256()
    for weight, bias in predictor.layers:
        digest.update(np.ascontiguousarray(weight, np.float32).tobytes())
        digest.update(np.ascontiguousarray(bias, np.float32).tobytes())
    digest.update(np.float32(predictor.input_scale).tobytes())
    return digest.hexdigest()


class _Kernel:
    """Scores float16/float32 chunks with preallocated buffers (no per-chunk allocation)."""

    def __init__(self, predictor: Predictor, rows: int, dim: int) -> None:
        self.predictor = predictor
        self.affine = predictor.is_affine
        self.x32 = np.empty((rows, dim), dtype=np.float32)
        self.sq = np.empty(rows, dtype=np.float32)
        self.dot = np.empty(rows, dtype=np.float32)
        if self.affine:
            weight, bias = predictor.affine()
            self.w = np.ascontiguousarray(weight, dtype=np.float32)
            self.b = np.float32(bias)
        else:
            self.layers = [
                (np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32))
                for w, b in predictor.layers
            ]
            self.hidden = [np.empty((rows, w.shape[1]), dtype=np.float32) for w, _ in self.layers]
            self.scale = np.float32(predictor.input_scale)

    def __call__(self, chunk: np.ndarray, out: np.ndarray) -> None:
        """Write the scores of ``chunk`` (rows, dim) into ``out`` (rows,); NaN where not finite."""
        m = len(chunk)
        if self.affine and chunk.dtype == np.float32:
            x = chunk  # read-only use: no copy needed
        else:
            x = self.x32[:m]
            np.copyto(x, chunk, casting="unsafe")
        sq = np.einsum("ij,ij->i", x, x, out=self.sq[:m])
        norms = np.sqrt(sq, out=sq)
        if self.affine:
            dots = np.dot(x, self.w, out=self.dot[:m])
            np.divide(dots, norms, out=out)
            out += self.b
        else:
            np.divide(x, norms[:, None], out=x)
            x *= self.scale
            h = x
            for k, ((w, b), buf) in enumerate(zip(self.layers, self.hidden, strict=True)):
                np.matmul(h, w, out=buf[:m])
                h = buf[:m]
                h += b
                if k < len(self.layers) - 1 and self.predictor.activation == "relu":
                    np.maximum(h, 0, out=h)
            out[:] = h[:, 0]


def score_array(predictor: Predictor, embeddings: np.ndarray) -> np.ndarray:
    """Scores of an in-memory ``(n, dim)`` array with the shard kernel (NaN for bad rows)."""
    n = len(embeddings)
    out = np.empty(n, dtype=np.float32)
    kernel = _Kernel(predictor, min(CHUNK_ROWS, max(n, 1)), predictor.dim)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for start in range(0, n, CHUNK_ROWS):
            kernel(embeddings[start : start + CHUNK_ROWS], out[start : start + CHUNK_ROWS])
    out[~np.isfinite(out)] = np.nan
    return out


def _open(url: str):  # type: ignore[no-untyped-def]
    if "://" not in url:
        return open(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


def _npy_scores(shard: Shard, predictor: Predictor, result: ShardResult) -> np.ndarray:
    dtype = np.dtype(shard.dtype)
    scores = np.empty(shard.rows, dtype=np.float32)
    chunk_rows = min(CHUNK_ROWS, max(shard.rows, 1))
    raw = np.empty((chunk_rows, shard.dim), dtype=dtype)
    raw_bytes = memoryview(raw).cast("B")
    kernel = _Kernel(predictor, chunk_rows, shard.dim)
    row_bytes = shard.dim * dtype.itemsize
    with (
        _open(shard.embeddings) as handle,
        np.errstate(invalid="ignore", divide="ignore", over="ignore"),
    ):
        handle.seek(shard.data_offset)
        for start in range(0, shard.rows, chunk_rows):
            m = min(chunk_rows, shard.rows - start)
            want = m * row_bytes
            got = handle.readinto(raw_bytes[:want])
            while got < want:
                more = handle.readinto(raw_bytes[got:want])
                if not more:
                    raise ShardFailed(
                        f"truncated at row {start + got // row_bytes} of {shard.rows}"
                    )
                got += more
            kernel(raw[:m], scores[start : start + m])
            _track_norms(kernel.sq[:m], result)
    return scores


def _track_norms(norms: np.ndarray, result: ShardResult) -> None:
    finite = norms[np.isfinite(norms)]
    if len(finite):
        result.norm_min = min(result.norm_min, float(finite.min()))
        result.norm_max = max(result.norm_max, float(finite.max()))


def _parquet_scores(shard: Shard, predictor: Predictor, result: ShardResult):  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    with _open(shard.embeddings) as handle:
        table = pq.read_table(handle)
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if len(flat) != len(table) * shard.dim:
        raise ShardFailed("embedding rows have different widths")
    emb = np.asarray(flat).reshape(len(table), shard.dim)
    scores = np.empty(len(table), dtype=np.float32)
    kernel = _Kernel(predictor, min(CHUNK_ROWS, max(len(table), 1)), shard.dim)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for start in range(0, len(table), CHUNK_ROWS):
            kernel(emb[start : start + CHUNK_ROWS], scores[start : start + CHUNK_ROWS])
            _track_norms(kernel.sq[: len(emb[start : start + CHUNK_ROWS])], result)
    return scores, table.drop_columns(["embedding"])


def _select_columns(available: list[str], requested: tuple[str, ...] | None) -> list[str]:
    if requested is None:
        return [c for c in DEFAULT_COLUMNS if c in available]
    missing = [c for c in requested if c not in available]
    if missing:
        raise ShardFailed(f"metadata lacks column(s) {', '.join(missing)}")
    return list(requested)


def existing_output_ok(path: Path, rows: int, predictor_id: str) -> bool:
    """True when ``path`` holds a whole shard scored by ``predictor_id``."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (OSError, ValueError):
        return False
    stored = (meta.metadata or {}).get(META_PREDICTOR, b"").decode()
    return meta.num_rows == rows and stored == predictor_id


def score_shard(
    shard: Shard,
    predictor: Predictor,
    out_dir: str,
    *,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
) -> ShardResult:
    """Score one shard into ``out_dir/scores_N.parquet``; never raises for shard problems."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    final = Path(out_dir) / shard.output_name
    result = ShardResult(n=shard.n, output=str(final))
    if not force and existing_output_ok(final, shard.rows, predictor.id):
        result.skipped = True
        result.rows = shard.rows
        return result
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if shard.dim != predictor.dim:
            raise ShardFailed(
                f"embeddings are {shard.dim}-d but the predictor ({predictor.embedding_model}) reads {predictor.dim}"
            )
        if shard.kind == "npy":
            assert shard.metadata is not None

            def read_metadata():  # type: ignore[no-untyped-def]
                with _open(shard.metadata) as handle:
                    file = pq.ParquetFile(handle)
                    chosen = _select_columns(file.schema_arrow.names, columns)
                    return file.read(columns=chosen) if chosen else pa.table({})

            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(read_metadata)
                scores = _npy_scores(shard, predictor, result)
                metadata = pending.result()
        else:
            scores, rest = _parquet_scores(shard, predictor, result)
            metadata = rest.select(_select_columns(rest.column_names, columns))
        bad = ~np.isfinite(scores)
        result.null_rows = int(bad.sum())
        result.rows = len(scores)
        aesthetic = pa.array(scores, type=pa.float32(), mask=bad if result.null_rows else None)
        table = (
            metadata.append_column("aesthetic", aesthetic)
            if metadata.num_columns
            else pa.table({"aesthetic": aesthetic})
        )
        table = table.replace_schema_metadata(
            {
                META_PREDICTOR: predictor.id.encode(),
                META_PREDICTOR_HASH: predictor_hash(predictor).encode(),
                META_SOURCE: Path(shard.embeddings).name.encode(),
            }
        )
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
    except ShardFailed as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"{exc.strerror or type(exc).__name__}: {exc.filename or final}"
    except Exception as exc:  # pyarrow errors on corrupted metadata files
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result.error = text[:200]
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        result.seconds = time.perf_counter() - started
    return result


def _limit_threads(threads: int) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, threads))


def score_shard_limited(
    shard: Shard,
    predictor: Predictor,
    out_dir: str,
    threads: int,
    columns: tuple[str, ...] | None,
    force: bool,
) -> ShardResult:
    """``score_shard`` with BLAS threads capped (one process per core share)."""
    with _limit_threads(threads):
        return score_shard(shard, predictor, out_dir, columns=columns, force=force)
