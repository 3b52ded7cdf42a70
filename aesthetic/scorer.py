"""Scoring embedding shards with a predictor: one task per shard, bytes in, scores out.

An affine head (every trained Ridge and LAION's V2 head, folded) is one fused pass per
float16 row (:mod:`aesthetic.kernels`) straight over the memory-mapped file, in chunks with
buffers allocated once per shard; the L2 normalisation the predictor expects is applied to
the product (divide by the row norm) instead of rewriting the rows. MLP heads run in
batches through preallocated layer buffers. Metadata is read on a second thread while the
embeddings are scored, and each output is written under a temporary name and renamed, so
a file either holds a whole shard or does not exist.
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

from dreamrate.aesthetic.predictor import Predictor
from dreamrate.aesthetic.shards import Shard

__all__ = [
    "DEFAULT_COLUMNS",
    "META_PREDICTOR",
    "ShardResult",
    "predictor_hash",
    "score_shard",
    "score_shard_limited",
    "score_shards_pipelined",
]

#: Metadata columns copied to the scores by default (those present), in this order.
DEFAULT_COLUMNS = ("url", "caption", "key", "hash")
META_PREDICTOR = b"dreamrate.predictor_id"
META_PREDICTOR_HASH = b"dreamrate.predictor_sha256"
META_SOURCE = b"dreamrate.source"
CHUNK_ROWS = 16384  #: rows per kernel call and per read (25 MB of 768-d float16)


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
    """Scores float16/float32 chunks with buffers allocated once (no per-chunk allocation).

    Affine heads: one fused pass per row (:mod:`aesthetic.kernels`) gives the dot product
    with the folded weights and the row norm; the score is ``dot / norm + bias``, which is
    the head applied to the L2-normalised row. MLP heads: rows are widened to float32 and
    normalised in place, then each layer is one BLAS matrix product into its own buffer.
    """

    def __init__(self, predictor: Predictor, dim: int, rows: int) -> None:
        self.affine = predictor.is_affine
        self.relu = predictor.activation == "relu"
        self.dot = np.empty(rows, dtype=np.float32)
        self.norm = np.empty(rows, dtype=np.float32)
        if self.affine:
            weight, bias = predictor.affine()
            self.w = np.ascontiguousarray(weight, dtype=np.float32)
            self.b = np.float32(bias)
        else:
            self.x32 = np.empty((rows, dim), dtype=np.float32)
            self.layers = [
                (np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32))
                for w, b in predictor.layers
            ]
            self.hidden = [np.empty((rows, w.shape[1]), dtype=np.float32) for w, _ in self.layers]
            self.scale = np.float32(predictor.input_scale)
        #: Smallest and largest row norm seen (finite rows), for the unit-length warning.
        self.norm_min = float("inf")
        self.norm_max = 0.0

    def __call__(self, chunk: np.ndarray, out: np.ndarray) -> None:
        """Write the scores of ``chunk`` (rows, dim) into ``out`` (rows,); NaN/inf where the
        embedding is not finite."""
        from dreamrate.aesthetic.kernels import affine_f16, affine_f32, widen_f16

        m = len(chunk)
        norm = self.norm[:m]
        half = chunk.dtype == np.float16
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if self.affine:
                dot = self.dot[:m]
                if half:
                    affine_f16(chunk.view(np.uint16), self.w, dot, norm)
                else:
                    affine_f32(chunk, self.w, dot, norm)
                np.divide(dot, norm, out=out)
                out += self.b
            else:
                x = self.x32[:m]
                if half:
                    widen_f16(chunk.view(np.uint16), x, norm)
                else:
                    np.copyto(x, chunk)
                    np.sqrt(np.einsum("ij,ij->i", x, x, out=norm), out=norm)
                np.divide(x, norm[:, None], out=x)
                x *= self.scale
                h = x
                for k, ((w, b), buf) in enumerate(zip(self.layers, self.hidden, strict=True)):
                    np.matmul(h, w, out=buf[:m])
                    h = buf[:m]
                    h += b
                    if k < len(self.layers) - 1 and self.relu:
                        np.maximum(h, 0, out=h)
                out[:] = h[:, 0]
        finite = norm[np.isfinite(norm)]
        if len(finite):
            self.norm_min = min(self.norm_min, float(finite.min()))
            self.norm_max = max(self.norm_max, float(finite.max()))


def _open(url: str):  # type: ignore[no-untyped-def]
    if "://" not in url:
        return open(url, "rb")
    import fsspec

    return fsspec.open(url, "rb").open()


def _read_exact(handle: Any, view: memoryview, start_row: int, row_bytes: int, rows: int) -> None:
    got = handle.readinto(view)
    while got < len(view):
        more = handle.readinto(view[got:])
        if not more:
            raise ShardFailed(f"truncated at row {start_row + got // row_bytes} of {rows}")
        got += more


def _npy_scores(shard: Shard, predictor: Predictor, result: ShardResult) -> np.ndarray:
    """Scores of an npy shard: local files are memory-mapped (the kernel reads the page cache
    directly); remote ones are read chunk by chunk, the next chunk while this one is scored."""
    dtype = np.dtype(shard.dtype)
    scores = np.empty(shard.rows, dtype=np.float32)
    chunk_rows = min(CHUNK_ROWS, max(shard.rows, 1))
    kernel = _Kernel(predictor, shard.dim, chunk_rows)
    starts = range(0, shard.rows, chunk_rows)
    if "://" not in shard.embeddings:
        data = np.memmap(
            shard.embeddings,
            dtype=dtype,
            mode="r",
            offset=shard.data_offset,
            shape=(shard.rows, shard.dim),
        )
        try:
            for start in starts:
                kernel(data[start : start + chunk_rows], scores[start : start + chunk_rows])
        finally:
            del data
    else:
        buffers = [np.empty((chunk_rows, shard.dim), dtype=dtype) for _ in range(2)]
        views = [memoryview(b).cast("B") for b in buffers]
        row_bytes = shard.dim * dtype.itemsize
        with _open(shard.embeddings) as handle, ThreadPoolExecutor(1) as reader:
            handle.seek(shard.data_offset)

            def read(k: int):  # type: ignore[no-untyped-def]
                m = min(chunk_rows, shard.rows - starts[k])
                view = views[k % 2][: m * row_bytes]
                return reader.submit(_read_exact, handle, view, starts[k], row_bytes, shard.rows)

            pending = read(0) if len(starts) else None
            for k, start in enumerate(starts):
                assert pending is not None
                pending.result()
                pending = read(k + 1) if k + 1 < len(starts) else None
                m = min(chunk_rows, shard.rows - start)
                kernel(buffers[k % 2][:m], scores[start : start + m])
    result.norm_min, result.norm_max = kernel.norm_min, kernel.norm_max
    return scores


def _parquet_scores(shard: Shard, predictor: Predictor, result: ShardResult):  # type: ignore[no-untyped-def]
    import pyarrow.parquet as pq

    with _open(shard.embeddings) as handle:
        table = pq.read_table(handle)
    column = table.column("embedding").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if len(flat) != len(table) * shard.dim:
        raise ShardFailed("embedding rows have different widths")
    emb = np.ascontiguousarray(flat).reshape(len(table), shard.dim)
    if emb.dtype not in (np.float16, np.float32):
        emb = emb.astype(np.float32)
    scores = np.empty(len(table), dtype=np.float32)
    kernel = _Kernel(predictor, shard.dim, min(CHUNK_ROWS, max(len(emb), 1)))
    for start in range(0, len(emb), CHUNK_ROWS):
        kernel(emb[start : start + CHUNK_ROWS], scores[start : start + CHUNK_ROWS])
    result.norm_min, result.norm_max = kernel.norm_min, kernel.norm_max
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


def _compute(
    shard: Shard, predictor: Predictor, columns: tuple[str, ...] | None, result: ShardResult
) -> Any:
    """The scores table of ``shard`` (metadata columns + ``aesthetic``), not yet written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shard.dim != predictor.dim:
        raise ShardFailed(
            f"embeddings are {shard.dim}-d but the predictor ({predictor.embedding_model}) reads {predictor.dim}"
        )
    if shard.kind == "npy":
        assert shard.metadata is not None
        metadata_url = shard.metadata

        def read_metadata():  # type: ignore[no-untyped-def]
            with _open(metadata_url) as handle:
                file = pq.ParquetFile(handle)
                chosen = _select_columns(file.schema_arrow.names, columns)
                return file.read(columns=chosen, use_threads=False) if chosen else pa.table({})

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
    return table.replace_schema_metadata(
        {
            META_PREDICTOR: predictor.id.encode(),
            META_PREDICTOR_HASH: predictor_hash(predictor).encode(),
            META_SOURCE: Path(shard.embeddings).name.encode(),
        }
    )


def _write(table: Any, final: Path) -> None:
    """Write under a temporary name, then rename: a scores file is whole or absent."""
    import pyarrow.parquet as pq

    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # Unique strings gain nothing from dictionaries; statistics only where filters use them.
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=False,
            write_statistics=["aesthetic"],
        )
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _fail(result: ShardResult, exc: BaseException, final: Path) -> None:
    if isinstance(exc, ShardFailed):
        result.error = str(exc)
    elif isinstance(exc, OSError):
        result.error = f"{exc.strerror or type(exc).__name__}: {exc.filename or final}"
    else:  # pyarrow errors on corrupted metadata files
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result.error = text[:200]


def _start(
    shard: Shard, predictor: Predictor, out_dir: str, force: bool
) -> tuple[ShardResult, Path]:
    final = Path(out_dir) / shard.output_name
    result = ShardResult(n=shard.n, output=str(final))
    if not force and existing_output_ok(final, shard.rows, predictor.id):
        result.skipped = True
        result.rows = shard.rows
    return result, final


def score_shard(
    shard: Shard,
    predictor: Predictor,
    out_dir: str,
    *,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
) -> ShardResult:
    """Score one shard into ``out_dir/scores_N.parquet``; never raises for shard problems."""
    started = time.perf_counter()
    result, final = _start(shard, predictor, out_dir, force)
    if result.skipped:
        return result
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _write(_compute(shard, predictor, columns, result), final)
    except Exception as exc:
        _fail(result, exc, final)
    result.seconds = time.perf_counter() - started
    return result


def score_shards_pipelined(
    shards: list[Shard],
    predictor: Predictor,
    out_dir: str,
    *,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
    on_result: Any = None,
) -> list[ShardResult]:
    """``score_shard`` over many shards in one process, writing shard k (compression, disk)
    on a second thread while shard k + 1 is read and scored."""
    results: list[ShardResult] = []

    def finish(result: ShardResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    with ThreadPoolExecutor(1) as writer:
        pending: tuple[Any, ShardResult, Path, float] | None = None

        def drain() -> None:
            nonlocal pending
            if pending is None:
                return
            future, result, final, started = pending
            pending = None
            try:
                future.result()
            except Exception as exc:
                _fail(result, exc, final)
            result.seconds = time.perf_counter() - started
            finish(result)

        for shard in shards:
            started = time.perf_counter()
            result, final = _start(shard, predictor, out_dir, force)
            if result.skipped:
                finish(result)
                continue
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                table = _compute(shard, predictor, columns, result)
            except Exception as exc:
                _fail(result, exc, final)
                finish(result)
                continue
            drain()  # at most one shard waits to be written
            pending = (writer.submit(_write, table, final), result, final, started)
        drain()
    return results


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
    _set_threads(threads)
    with _limit_threads(threads):
        return score_shard(shard, predictor, out_dir, columns=columns, force=force)


def _set_threads(threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
