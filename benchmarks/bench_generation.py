"""Generation benchmarks: batching speed-up, fairness, queue overhead (prints markdown tables).

Run: .venv/bin/python -m benchmarks.bench_generation [--quick] [--gpu-model ID]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from collections import Counter

from sqlalchemy import insert

from benchmarks.common import (
    machine,
    median,
    percentile,
    postgres_database,
    print_table,
    sqlite_database,
    tiny_models,
)
from dreamrate.db.engine import create_engine
from dreamrate.db.models import Job
from dreamrate.db.users import ensure_user
from dreamrate.generation.queue import JobRepository, StoredImage
from dreamrate.generation.request import GenerationRequest
from dreamrate.generation.store import FolderStore
from dreamrate.generation.worker import GenerationWorker, PipelineCache


def request(prompt: str, *, model: str, size: int, steps: int, seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=None,
        seed=seed,
        steps=steps,
        guidance=0.0,
        width=size,
        height=size,
        num_images=1,
        model=model,
    )


async def batching(
    model: str, sizes: list[int], jobs: int, steps: int, device: str
) -> list[list[object]]:
    import tempfile
    from pathlib import Path

    pipelines = PipelineCache(device=device)  # type: ignore[arg-type]
    pipelines.get(model)
    rows: list[list[object]] = []
    for size in sizes:
        rates = {}
        for max_batch in (1, 4):
            async with sqlite_database() as url:
                engine = create_engine(url)
                repo = JobRepository(engine, per_user_cap=10_000, global_cap=10_000)
                users = [(await ensure_user(engine, i, f"u{i}")).id for i in range(jobs)]
                with tempfile.TemporaryDirectory() as folder:
                    worker = GenerationWorker(
                        repo=repo,
                        store=FolderStore(Path(folder)),
                        pipelines=pipelines,
                        max_batch=max_batch,
                    )
                    # Warm-up at this size (kernels, allocator) outside the timing.
                    await repo.enqueue(
                        request("warm", model=model, size=size, steps=steps, seed=0),
                        requester_id=users[0],
                    )
                    await worker.run_once()
                    for i in range(jobs):
                        await repo.enqueue(
                            request(f"prompt {i}", model=model, size=size, steps=steps, seed=i),
                            requester_id=users[i],
                        )
                    start = time.perf_counter()
                    made = 0
                    while (n := await worker.run_once()) is not None:
                        made += n
                    rates[max_batch] = made / (time.perf_counter() - start)
                await engine.dispose()
        rows.append(
            [f"{size} px", f"{rates[1]:.2f}", f"{rates[4]:.2f}", f"{rates[4] / rates[1]:.2f}x"]
        )
    return rows


async def fairness(url: str) -> int:
    engine = create_engine(url)
    repo = JobRepository(engine, per_user_cap=10_000, global_cap=10_000)
    a, b = (await ensure_user(engine, 1, "A")).id, (await ensure_user(engine, 2, "B")).id
    for i in range(50):
        await repo.enqueue(request(f"a{i}", model="m", size=64, steps=1, seed=i), requester_id=a)
    b_job = await repo.enqueue(request("b", model="m", size=64, steps=1, seed=0), requester_id=b)
    batches = 0
    while batch := await repo.claim_batch("w", max_images=4):
        batches += 1
        if any(job.id == b_job.id for job in batch):
            break
        for job in batch:
            await repo.complete("w", job.id, [])
    await engine.dispose()
    return batches


async def _bulk_jobs(url: str, count: int) -> None:
    engine = create_engine(url)
    users = [(await ensure_user(engine, i, f"u{i}")).id for i in range(1, 51)]
    rows = [
        {
            "requester_id": users[i % len(users)],
            "prompt": f"p{i}",
            "model": "m",
            "width": 64,
            "height": 64,
            "steps": 1,
            "guidance": 0.0,
            "scheduler": "default",
            "num_images": 1,
            "seed": i,
        }
        for i in range(count)
    ]
    async with engine.begin() as conn:
        for start in range(0, count, 1000):
            await conn.execute(insert(Job), rows[start : start + 1000])
    await engine.dispose()


async def overhead(url: str, jobs: int) -> tuple[float, float]:
    await _bulk_jobs(url, jobs)
    engine = create_engine(url)
    repo = JobRepository(engine)
    times = []
    while True:
        start = time.perf_counter()
        batch = await repo.claim_batch("w", max_images=1)
        if not batch:
            break
        await repo.complete("w", batch[0].id, [StoredImage(0, 1, 64, 64, "0" * 64, "x")])
        times.append((time.perf_counter() - start) * 1000)
    await engine.dispose()
    return median(times), percentile(times, 99)


def _drain(url: str, name: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> list[int]:
        engine = create_engine(url)
        repo = JobRepository(engine)
        claimed: list[int] = []
        while batch := await repo.claim_batch(name, max_images=4):
            for job in batch:
                claimed.append(job.id)
                await repo.complete(name, job.id, [])
        await engine.dispose()
        return claimed

    out.put(asyncio.run(run()))


async def drain_with_processes(url: str, jobs: int, processes: int) -> tuple[float, int, int]:
    await _bulk_jobs(url, jobs)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [ctx.Process(target=_drain, args=(url, f"p{i}", out)) for i in range(processes)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    counts = Counter(job_id for claimed in results for job_id in claimed)
    return jobs / elapsed, len(counts), sum(c - 1 for c in counts.values() if c > 1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (CI smoke test)")
    parser.add_argument(
        "--gpu-model", help="also time batching with this real model on the GPU, at 512 px"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")

    tiny = str(tiny_models())
    sizes = [32, 64] if args.quick else [32, 64, 128]
    rows = await batching(tiny, sizes, jobs=8, steps=4, device="cpu")
    if args.gpu_model:
        rows += [
            [f"{args.gpu_model} " + r[0], *r[1:]]
            for r in await batching(args.gpu_model, [512], jobs=8, steps=4, device="cuda")
        ]
    print_table(
        "Batching: 8 single-image jobs, tiny SD, 4 steps, CPU (images/s)",
        ["size", "one job at a time", "batched (max_batch 4)", "speed-up"],
        rows,
    )

    async with sqlite_database() as url:
        waited = await fairness(url)
    print_table(
        "Fairness: A queues 50 jobs, then B queues 1", ["batches until B is served"], [[waited]]
    )

    depths = [200] if args.quick else [200, 2000]
    rows = []
    for name, database in (("SQLite", sqlite_database), ("PostgreSQL", postgres_database)):
        for depth in depths:
            async with database() as url:
                med, p99 = await overhead(url, depth)
            rows.append([name, depth, f"{med:.2f}", f"{p99:.2f}"])
    print_table(
        "Queue overhead: claim + complete per job, draining a queue of the given depth (ms)",
        ["database", "queued jobs", "median", "p99"],
        rows,
    )

    total = 1000 if args.quick else 10_000
    async with postgres_database() as url:
        rate, distinct, doubles = await drain_with_processes(url, total, 4)
    print_table(
        "4 worker processes drain the queue on PostgreSQL",
        ["jobs", "jobs/s", "distinct jobs claimed", "double claims"],
        [[total, f"{rate:.0f}", distinct, doubles]],
    )


if __name__ == "__main__":
    asyncio.run(main())
