"""Engines: where the scoring tasks run, a local process pool or a Ray cluster.

Every engine runs the same runner task (:func:`~dreamrate.aesthetic.filtering.runner.score_shard_limited`
in worker processes and on Ray, its pipelined form in this process for one worker), so the
files they write are byte-for-byte the same. Shard problems come back as results (listed at the end);
a task that dies (a worker killed, a node lost) is retried by Ray, and by the local engine
once in a fresh process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

from dreamrate.aesthetic.filtering.kernel import limit_threads
from dreamrate.aesthetic.filtering.reader import Shard
from dreamrate.aesthetic.filtering.runner import (
    ShardResult,
    score_shard_limited,
    score_shards_pipelined,
    score_shards_threaded,
)
from dreamrate.aesthetic.predictor import Predictor

__all__ = ["FORKSERVER_PRELOAD", "Engine", "local_pool", "run_local", "run_ray", "run_threads"]

logger = logging.getLogger(__name__)

Engine = Literal["local", "threads", "ray"]
#: Modules the forkserver imports once for all workers (a name that fails to import is
#: skipped silently by multiprocessing, so a test imports each of them).
FORKSERVER_PRELOAD = ("pyarrow.parquet", "dreamrate.aesthetic.filtering.runner")
Progress = Callable[[ShardResult], None]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool for :func:`run_local` (reuse one across runs to start workers once)."""
    import multiprocessing

    # forkserver: workers fork from a clean server that imported the runner once, instead
    # of each importing it (spawn) or inheriting used thread pools (fork).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def run_local(
    shards: Iterable[Shard],
    predictor: Predictor,
    out_dir: str,
    *,
    workers: int = 1,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
    on_result: Progress | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> list[ShardResult]:
    """Score shards with ``workers`` processes (1: in this process), each with its share of
    cores; ``pool`` (from :func:`local_pool`) reuses started workers."""
    shards = list(shards)
    threads = max(1, _cores() // max(workers, 1))
    results: list[ShardResult] = []

    def done(result: ShardResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    if workers <= 1:
        with limit_threads(threads):
            score_shards_pipelined(
                shards, predictor, out_dir, columns=columns, force=force, on_result=done
            )
        return results
    pending = list(shards)
    for attempt in (1, 2):
        if not pending:
            break
        retry: list[Shard] = []
        own = pool is None or attempt == 2  # a broken pool cannot be reused
        executor = local_pool(workers) if own else pool
        assert executor is not None
        with executor if own else contextlib.nullcontext(executor):
            futures = {
                executor.submit(
                    score_shard_limited, s, predictor, out_dir, threads, columns, force
                ): s
                for s in pending
            }
            for future in as_completed(futures):
                shard = futures[future]
                try:
                    done(future.result())
                except BrokenProcessPool:
                    if attempt == 1:
                        retry.append(shard)
                    else:
                        done(
                            ShardResult(
                                shard.n, shard.output_name, error="worker process died twice"
                            )
                        )
        pending = retry
        if retry:
            logger.warning("a worker process died; retrying %d shard(s)", len(retry))
    return results


def run_threads(
    shards: Iterable[Shard],
    predictor: Predictor,
    out_dir: str,
    *,
    workers: int | None = None,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
    on_result: Progress | None = None,
) -> list[ShardResult]:
    """Score shards on ``workers`` threads of this process (default: the cores)."""
    return score_shards_threaded(
        list(shards),
        predictor,
        out_dir,
        workers or _cores(),
        columns=columns,
        force=force,
        on_result=on_result,
    )


def _score_on_ray(
    shard: Shard,
    predictor: Predictor,
    out_dir: str,
    columns: tuple[str, ...] | None,
    force: bool,
) -> ShardResult:
    """The runner task on a Ray worker, saying which node ran it."""
    import ray

    result = score_shard_limited(shard, predictor, out_dir, 1, columns, force)
    result.node = ray.get_runtime_context().get_node_id()
    return result


def run_ray(
    shards: Iterable[Shard],
    predictor: Predictor,
    out_dir: str,
    *,
    address: str | None = None,
    workers: int | None = None,
    columns: tuple[str, ...] | None = None,
    force: bool = False,
    max_retries: int = 3,
    on_result: Progress | None = None,
) -> list[ShardResult]:
    """One Ray task per shard on the cluster at ``address`` (default: a local Ray), spread
    over the nodes (reading shared storage is the bottleneck, so every node's link counts)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, object] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address:
            kwargs["address"] = address
        elif workers:
            kwargs["num_cpus"] = workers
        ray.init(**kwargs)
    try:
        task = ray.remote(max_retries=max_retries, num_cpus=1, scheduling_strategy="SPREAD")(
            _score_on_ray
        )
        predictor_ref = ray.put(predictor)
        shards = list(shards)
        refs = {task.remote(s, predictor_ref, out_dir, columns, force): s for s in shards}
        results: list[ShardResult] = []
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            shard = refs[ready[0]]
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # the task failed max_retries + 1 times
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                result = ShardResult(
                    shard.n, shard.output_name, error=f"Ray task failed: {text[:160]}"
                )
            results.append(result)
            if on_result:
                on_result(result)
        return results
    finally:
        if started_here:
            ray.shutdown()
