"""Worker processes as operators run them: kill -9 mid-batch, SIGTERM, and `dreamrate generate`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from dreamrate.db.models import Image, JobStatus
from dreamrate.generation.queue import JobRepository
from dreamrate.generation.store import FolderStore
from dreamrate.generation.worker import GenerationWorker, PipelineCache
from tests.databases import sqlite_only
from tests.generation.conftest import enqueue

DREAMRATE = Path(sys.executable).parent / "dreamrate"


def start_worker(database_url: str, data_dir: Path, worker_id: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMRATE_")}
    env.update(
        DREAMRATE_DATABASE_URL=database_url,
        DREAMRATE_DATA_DIR=str(data_dir),
        DREAMRATE_GENERATION_LEASE_SECONDS="2",
        DREAMRATE_GENERATION_DEVICE="cpu",
    )
    log = open(data_dir / f"{worker_id}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(DREAMRATE), "worker", "--id", worker_id], env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def wait_until_rendering(
    repo: JobRepository, job_id: int, worker: subprocess.Popen[bytes], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await repo.get(job_id)
        if job is not None and job.status is JobStatus.RUNNING and job.progress > 0:
            return
        assert worker.poll() is None, "worker exited early"
        await asyncio.sleep(0.1)
    raise AssertionError("the worker never started rendering")


# On PostgreSQL the same kill, with the second worker already running, is
# tests/reliability/test_worker_crash.py.
@sqlite_only
async def test_kill_9_mid_batch_then_another_worker_finishes_without_duplicates(
    database_url: str, engine, user_factory, tiny_models, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    repo = JobRepository(engine, lease_seconds=2)
    tiny = str(tiny_models[0])
    jobs = [
        await enqueue(repo, await user_factory(i), f"job {i}", model=tiny, steps=100, num_images=2)
        for i in (1, 2)
    ]
    doomed = start_worker(database_url, tmp_path, "doomed")
    try:
        await wait_until_rendering(repo, jobs[0].id, doomed)
        held = await repo.get(jobs[1].id)
        assert held is not None and held.lease_owner == "doomed"  # both jobs were in its batch
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    survivor = GenerationWorker(
        repo=repo,
        store=FolderStore(tmp_path / "images"),
        pipelines=PipelineCache(device="cpu"),
        worker_id="survivor",
        poll_interval=0.2,
    )
    serving = asyncio.create_task(survivor.run())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [await repo.get(j.id) for j in jobs]
            if all(s is not None and s.status is JobStatus.DONE for s in states):
                break
            await asyncio.sleep(0.2)
    finally:
        survivor.stop.set()
        await serving
    for job in jobs:
        final = await repo.get(job.id)
        assert final is not None and final.status is JobStatus.DONE and final.attempts == 2
        assert [image.index for image in await repo.images(job.id)] == [0, 1]
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        assert await session.scalar(select(func.count()).select_from(Image)) == 4
    assert not list((tmp_path / "images").rglob(".tmp-*"))


async def test_sigterm_releases_the_batch(
    database_url: str, engine, user_factory, tiny_models, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    repo = JobRepository(engine, lease_seconds=2)
    job = await enqueue(repo, await user_factory(1), "long", model=str(tiny_models[0]), steps=300)
    worker = start_worker(database_url, tmp_path, "polite")
    try:
        await wait_until_rendering(repo, job.id, worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    back = await repo.get(job.id)
    assert (
        back is not None
        and back.status is JobStatus.QUEUED
        and back.attempts == 0
        and back.lease_owner is None
    )
    assert "released 1 job(s) back to the queue" in (tmp_path / "polite.log").read_text()


def run_generate(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DREAMRATE_")}
    full.update(DREAMRATE_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [str(DREAMRATE), "generate", *args], capture_output=True, text=True, env=full, timeout=300
    )


def test_generate_prints_one_path_per_image(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_generate(
        tmp_path,
        "a lighthouse at dusk",
        "--images",
        "2",
        "--seed",
        "5",
        "--steps",
        "2",
        DREAMRATE_GENERATION_MODEL=str(tiny_models[0]),
    )
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert len(paths) == 2 and all(Path(p).is_file() and p.endswith(".png") for p in paths)
    assert "seed 5, 64x64, 2 steps" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "error: prompt: must not be empty."),
        (
            ["x", "--size", "100"],
            "error: width: must be a multiple of 8 between 32 and 1024, got 100.",
        ),
        (
            ["x", "--size", "huge"],
            "error: size: give N or WxH in pixels (e.g. 512 or 768x512), not 'huge'.",
        ),
        (["x", "--images", "9"], "error: images: must be between 1 and 4, got 9."),
        (["x", "--steps", "500"], "error: steps: must be between 1 and 50, got 500."),
        (["so much gore"], "error: prompt: contains the blocked term 'gore'; please rephrase."),
    ],
)
def test_generate_refuses_bad_input_and_queues_nothing(
    tiny_models, tmp_path: Path, args: list[str], message: str
) -> None:  # type: ignore[no-untyped-def]
    result = run_generate(
        tmp_path,
        *args,
        DREAMRATE_GENERATION_MODEL=str(tiny_models[0]),
        DREAMRATE_GENERATION_BLOCKED_TERMS="gore",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == message
    db = tmp_path / "data" / "dreamrate.db"
    if db.exists():
        import sqlite3

        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
