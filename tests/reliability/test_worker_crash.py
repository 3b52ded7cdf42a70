"""kill -9 of one worker process mid-batch on PostgreSQL while a second worker process runs."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dreamrate.db.engine import create_engine
from dreamrate.db.migrate import upgrade
from dreamrate.db.models import Image, JobStatus
from dreamrate.db.users import ensure_user
from dreamrate.generation.queue import JobRepository
from tests.generation.conftest import enqueue
from tests.generation.test_processes import start_worker, wait_until_rendering

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def test_second_worker_takes_over_the_killed_workers_batch(
    postgres_url: str, tiny_models, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(postgres_url)
    await upgrade(engine)
    repo = JobRepository(engine, lease_seconds=2, per_user_cap=100)
    tiny = str(tiny_models[0])
    users = [(await ensure_user(engine, 900 + i, f"u{i}")).id for i in range(4)]
    jobs = [
        await enqueue(repo, users[i], f"job {i}", model=tiny, steps=60, num_images=2)
        for i in range(4)
    ]
    doomed = start_worker(postgres_url, tmp_path, "doomed")
    steady = None
    try:
        await wait_until_rendering(repo, jobs[0].id, doomed)
        steady = start_worker(postgres_url, tmp_path, "steady")
        held = [
            j for j in [await repo.get(job.id) for job in jobs] if j and j.lease_owner == "doomed"
        ]
        assert held  # the doomed worker holds at least the job it is rendering
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = [await repo.get(j.id) for j in jobs]
            if all(s is not None and s.status is JobStatus.DONE for s in states):
                break
            assert steady.poll() is None, (tmp_path / "steady.log").read_text()[-2000:]
            await asyncio.sleep(0.3)
        for job in jobs:
            final = await repo.get(job.id)
            assert final is not None and final.status is JobStatus.DONE, final
            assert [image.index for image in await repo.images(job.id)] == [0, 1]
        for job in held:
            assert (await repo.get(job.id)).attempts == 2  # type: ignore[union-attr]
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(Image)) == 8
        assert not list((tmp_path / "images").rglob(".tmp-*"))
    finally:
        for process in (doomed, steady):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        await engine.dispose()
