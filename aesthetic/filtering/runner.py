"""Runner: one task scores one shard, ``scores_N.parquet`` for ``img_emb_N.npy``.

The reader yields the shard's embeddings in chunks, the kernel turns each chunk into
scores in buffers allocated once per shard, and the writer writes the file atomically;
metadata is read on a second thread while the embeddings are scored. A shard's problems
come back in its :class:`ShardResult`, never as an exception, so one bad shard never
stops the others, and both engines (:mod:`~dreamrate.aesthetic.filtering.engines`) call
the same task, so their files are byte for byte the same.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.aesthetic.filtering.kernel import limit_threads
from dreamrate.aesthetic.filtering.reader import (
    Shard,
    open_source,
    read_npy_chunks,
    read_parquet_embeddings,
    source_identity,
)
from dreamrate.aesthetic.filtering.torch_kernel import choose_kernel, kernel_name
from dreamrate.aesthetic.filtering.writer import (
    DEFAULT_COLUMNS,
    ScoreWriteError,
    existing_output_ok,
    scores_table,
    write_scores,
)
from dreamrate.aesthetic.predictor import Predictor

__all__ = [
    "CHUNK_ROWS",
    "DEFAULT_COLUMNS",
    "ShardResult",
    "score_shard",
    "score_shard_limited",
    "score_shards_pipelined",
    "score_shards_threaded",
    "shard_identity",
]

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
    node: str | None = None  #: the Ray node that ran it (None off Ray)


def _scores(
    shard: Shard, predictor: Predictor, result: ShardResult, serial: bool = False
) -> tuple[np.ndarray, Any]:
    """The shard's scores, and its metadata table for a Parquet shard (None for npy)."""
    if shard.kind == "npy":
        chunk_rows = min(CHUNK_ROWS, max(shard.rows, 1))
        scores = np.empty(shard.rows, dtype=np.float32)
        kernel = choose_kernel(predictor, shard.dim, chunk_rows, serial=serial)
        for start, chunk in read_npy_chunks(shard, chunk_rows):
            kernel(chunk, scores[start : start + len(chunk)])
        rest = None
    else:
        emb, rest = read_parquet_embeddings(shard)
        scores = np.empty(len(emb), dtype=np.float32)
        kernel = choose_kernel(
            predictor, shard.dim, min(CHUNK_ROWS, max(len(emb), 1)), serial=serial
        )
        for start in range(0, len(emb), CHUNK_ROWS):
            kernel(emb[start : start + CHUNK_ROWS], scores[start : start + CHUNK_ROWS])
    result.norm_min, result.norm_max = kernel.norm_min, kernel.norm_max
    return scores, rest


def shard_identity(shard: Shard) -> dict[str, Any]:
    """The source files of ``shard`` and their identities, as a score file's footer keeps
    them (so a changed source is noticed by reruns and by ``export manifest``)."""
    embeddings = {"url": shard.embeddings, "identity": source_identity(shard.embeddings)}
    metadata = (
        embeddings
        if shard.metadata is None
        else {"url": shard.metadata, "identity": source_identity(shard.metadata)}
    )
    # Which kernel scores it: a GPU's scores differ from the CPU's in the last float32 bits,
    # so a resumed run on another kind of host rescores rather than mixing the two.
    return {
        "embeddings": embeddings,
        "metadata": metadata,
        "rows": shard.rows,
        "kernel": kernel_name(),
    }


def _select_columns(available: list[str], requested: tuple[str, ...] | None) -> list[str]:
    if requested is None:
        return []  # a sidecar: the manifest reads the kept rows' metadata from the source
    missing = [c for c in requested if c not in available]
    if missing:
        raise ShardFailed(f"metadata lacks column(s) {', '.join(missing)}")
    return list(requested)


def _compute(
    shard: Shard,
    predictor: Predictor,
    columns: tuple[str, ...] | None,
    result: ShardResult,
    identity: dict[str, Any] | None = None,
    serial: bool = False,
) -> Any:
    """The scores table of ``shard`` (``aesthetic``, after the ``columns`` asked for), not
    yet written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shard.dim != predictor.dim:
        raise ShardFailed(
            f"embeddings are {shard.dim}-d but the predictor ({predictor.embedding_model}) reads {predictor.dim}"
        )
    if shard.kind == "npy" and columns is None:
        scores, _ = _scores(shard, predictor, result, serial)
        metadata = pa.table({})
    elif shard.kind == "npy":
        assert shard.metadata is not None
        metadata_url = shard.metadata

        def read_metadata():  # type: ignore[no-untyped-def]
            with open_source(metadata_url) as handle:
                file = pq.ParquetFile(handle)
                chosen = _select_columns(file.schema_arrow.names, columns)
                return file.read(columns=chosen, use_threads=False) if chosen else pa.table({})

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(read_metadata)
            scores, _ = _scores(shard, predictor, result, serial)
            metadata = pending.result()
    else:
        scores, rest = _scores(shard, predictor, result, serial)
        metadata = rest.select(_select_columns(rest.column_names, columns))
    result.null_rows = int((~np.isfinite(scores)).sum())
    result.rows = len(scores)
    return scores_table(
        metadata, scores, predictor, shard.embeddings, identity or shard_identity(shard)
    )


def _fail(result: ShardResult, exc: BaseException, final: Path) -> None:
    if isinstance(exc, ShardFailed | ScoreWriteError | ValueError):  # ValueError: a bad file
        result.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    elif isinstance(exc, OSError):
        result.error = f"{exc.strerror or type(exc).__name__}: {exc.filename or final}"
    else:  # pyarrow errors on corrupted metadata files
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        result.error = text[:200]


def _start(
    shard: Shard, predictor: Predictor, out_dir: str, force: bool
) -> tuple[ShardResult, Path, dict[str, Any] | None]:
    final = Path(out_dir) / shard.output_name
    result = ShardResult(n=shard.n, output=str(final))
    try:
        identity = shard_identity(shard)
    except OSError as exc:
        _fail(result, exc, final)
        return result, final, None
    if not force and existing_output_ok(final, shard.rows, predictor, identity):
        result.skipped = True
        result.rows = shard.rows
    return result, final, identity


def score_shard(
    shard: Shard,
    predictor: Predictor,
    out_dir: str,
    *,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
    serial: bool = False,
) -> ShardResult:
    """Score one shard into ``out_dir/scores_N.parquet``; never raises for shard problems.
    ``serial``: on this thread alone, without the GIL (one shard per thread)."""
    started = time.perf_counter()
    result, final, identity = _start(shard, predictor, out_dir, force)
    if result.skipped or result.error:
        return result
    try:
        write_scores(_compute(shard, predictor, columns, result, identity, serial), final)
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
            result, final, identity = _start(shard, predictor, out_dir, force)
            if result.skipped or result.error:
                finish(result)
                continue
            try:
                table = _compute(shard, predictor, columns, result, identity)
            except Exception as exc:
                _fail(result, exc, final)
                finish(result)
                continue
            drain()  # at most one shard waits to be written
            pending = (writer.submit(write_scores, table, final), result, final, started)
        drain()
    return results


def score_shard_limited(
    shard: Shard,
    predictor: Predictor,
    out_dir: str,
    threads: int,
    columns: tuple[str, ...] | None,
    force: bool,
) -> ShardResult:
    """``score_shard`` with numba and BLAS threads capped (one process per core share)."""
    with limit_threads(threads):
        return score_shard(shard, predictor, out_dir, columns=columns, force=force)


def score_shards_threaded(
    shards: list[Shard],
    predictor: Predictor,
    out_dir: str,
    threads: int,
    *,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
    on_result: Any = None,
) -> list[ShardResult]:
    """Score shards side by side on ``threads`` threads of this process, one shard per
    thread with the GIL-free serial kernel: the cores add up with nothing to start (no
    process, no import), and reading, compression and writing overlap across shards."""
    from concurrent.futures import as_completed

    results: list[ShardResult] = []
    with limit_threads(1), ThreadPoolExecutor(threads) as pool:
        futures = [
            pool.submit(
                score_shard, s, predictor, out_dir, columns=columns, force=force, serial=True
            )
            for s in shards
        ]
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                if on_result is not None:
                    on_result(result)
        except BaseException:  # Ctrl-C: the shards not started are not started
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
