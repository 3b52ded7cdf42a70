"""The worker with the real tiny diffusers pipeline: batching, seeds, store, cancel, failures."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrate.core.errors import StorageError
from dreamrate.core.metrics import MetricsServer
from dreamrate.db.models import JobStatus
from dreamrate.generation.queue import JobRepository
from dreamrate.generation.render import ImageSpec, render_images
from dreamrate.generation.store import FolderStore
from dreamrate.generation.worker import GenerationWorker, PipelineCache
from tests.generation.conftest import enqueue


@pytest.fixture(scope="module")
def pipelines(tiny_models) -> PipelineCache:  # type: ignore[no-untyped-def]
    cache = PipelineCache(device="cpu", max_models=2)
    cache.get(str(tiny_models[0]))
    return cache


@pytest.fixture
def tiny(tiny_models) -> str:  # type: ignore[no-untyped-def]
    return str(tiny_models[0])


def make_worker(
    repo: JobRepository, pipelines: PipelineCache, root: Path, **kwargs: object
) -> GenerationWorker:
    return GenerationWorker(
        repo=repo,
        store=FolderStore(root),
        pipelines=pipelines,
        worker_id="w1",
        max_batch=4,
        **kwargs,  # type: ignore[arg-type]
    )


def pixels(store_root: Path, path: str) -> np.ndarray:
    return np.asarray(Image.open(store_root / path)).astype(np.int16)


async def test_a_seed_gives_the_same_image_alone_or_in_a_batch(
    repo, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    users = [await user_factory(i) for i in range(1, 5)]
    worker = make_worker(repo, pipelines, tmp_path)
    alone = await enqueue(repo, users[0], "a red fox", model=tiny, seed=77)
    assert await worker.run_once() == 1
    batched = [
        await enqueue(repo, users[i], f"prompt {i}", model=tiny, seed=10 * i) for i in range(1, 4)
    ]
    again = await enqueue(repo, users[0], "a red fox", model=tiny, seed=77)
    assert await worker.run_once() == 4  # one pipeline call for four jobs
    for j in [*batched, again]:
        current = await repo.get(j.id)
        assert current is not None and current.status is JobStatus.DONE
    (first,), (second,) = await repo.images(alone.id), await repo.images(again.id)
    diff = np.abs(pixels(tmp_path, first.path) - pixels(tmp_path, second.path)).max()
    assert diff <= 2, f"seed 77 differs by {diff}/255 between batch sizes 1 and 4"
    others = [(await repo.images(j.id))[0] for j in batched]
    assert len({image.sha256 for image in others} | {first.sha256}) == 4


async def test_images_are_stored_and_recorded(
    repo, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    job = await enqueue(
        repo, await user_factory(1), "three", model=tiny, seed=2**32 - 2, num_images=3
    )
    assert await make_worker(repo, pipelines, tmp_path).run_once() == 3
    rows = await repo.images(job.id)
    assert [r.index for r in rows] == [0, 1, 2]
    assert [r.seed for r in rows] == [2**32 - 2, 2**32 - 1, 0]  # seed + i, wrapping
    for row in rows:
        data = (tmp_path / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.path == f"{row.sha256[:2]}/{row.sha256}.png"
        assert (row.width, row.height) == Image.open(tmp_path / row.path).size == (64, 64)
    assert not list(tmp_path.rglob(".tmp-*"))


async def test_render_stops_at_the_step_the_callback_says(pipelines, tiny) -> None:  # type: ignore[no-untyped-def]
    steps_seen = []

    def on_step() -> bool:
        steps_seen.append(1)
        return len(steps_seen) < 3

    render_images(
        pipelines.get(tiny),
        [ImageSpec("x", None, 1)],
        width=64,
        height=64,
        steps=20,
        guidance=0.0,
        on_step=on_step,
    )
    assert len(steps_seen) == 3


async def test_cancelling_a_running_job_stops_it(
    repo, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    owner = await user_factory(1)
    job = await enqueue(repo, owner, "slow", model=tiny, steps=400, width=128, height=128)
    worker = make_worker(repo, pipelines, tmp_path, progress_interval=0.05)
    task = asyncio.create_task(worker.run_once())
    for _ in range(200):
        current = await repo.get(job.id)
        if current is not None and current.progress > 0:
            break
        await asyncio.sleep(0.05)
    assert await repo.cancel(job.id, by_user_id=owner) is JobStatus.RUNNING
    assert await asyncio.wait_for(task, timeout=60) == 0
    final = await repo.get(job.id)
    assert final is not None and final.status is JobStatus.CANCELLED and final.progress < 0.9
    assert await repo.images(job.id) == [] and not list(tmp_path.rglob("*.png"))


async def test_a_model_that_fails_to_load_fails_its_jobs_only(
    repo, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    a, b = await user_factory(1), await user_factory(2)
    bad = await enqueue(repo, a, "bad", model=str(tmp_path / "missing-model"))
    good = await enqueue(repo, b, "good", model=tiny)
    worker = make_worker(repo, pipelines, tmp_path / "images")
    await worker.run_once()
    await worker.run_once()
    failed, done = await repo.get(bad.id), await repo.get(good.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and "missing-model does not exist" in failed.error
    assert done is not None and done.status is JobStatus.DONE
    attempts = worker.metrics.registry.get_sample_value
    assert attempts("dreamrate_worker_attempts_total", {"outcome": "failed"}) == 1
    assert attempts("dreamrate_worker_attempts_total", {"outcome": "done"}) == 1


async def test_an_unwritable_store_gives_the_batch_back_and_claims_nothing_until_it_works(
    engine, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The store's fault is not the job's: the job goes back to the queue with the reason and
    its attempt uncounted, and the worker claims no batch (and renders nothing) until the
    store takes a test write again; then the job is served."""
    repo = JobRepository(engine, max_attempts=1)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    job = await enqueue(repo, await user_factory(1), "x", model=tiny)
    worker = make_worker(repo, pipelines, blocker / "images")
    assert await worker.run_once() == 0
    back = await repo.get(job.id)
    assert back is not None and back.status is JobStatus.QUEUED and back.attempts == 0
    assert (back.error or "").startswith("image store: DREAMRATE_STORAGE_IMAGES_DIR: cannot")
    assert await repo.images(job.id) == []
    sample = worker.metrics.registry.get_sample_value
    assert sample("dreamrate_worker_attempts_total", {"outcome": "released"}) == 1
    assert sample("dreamrate_worker_store_down") == 1
    health = await MetricsServer(
        "worker", worker.metrics.registry, checks=worker.health_checks()
    ).health()
    assert health["checks"] == {"database": "ok", "store": "the image store refuses writes"}
    for _ in range(3):  # max_attempts=1: a counted attempt would have failed it for good
        with pytest.raises(StorageError, match="not a writable folder"):
            await worker.run_once()
    still = await repo.get(job.id)
    assert still is not None and still.status is JobStatus.QUEUED and still.lease_owner is None
    blocker.unlink()  # the store works again
    assert await worker.run_once() == 1
    done = await repo.get(job.id)
    assert done is not None and done.status is JobStatus.DONE
    assert len(await repo.images(job.id)) == 1
    assert sample("dreamrate_worker_store_down") == 0
    assert sample("dreamrate_worker_images_total") == 1


async def test_an_image_the_store_always_refuses_fails_its_job_and_not_the_batch(
    engine, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """A store that takes test writes but never this job's image (here: a file stands where
    its hash's folder would go) is the job's fault: each try counts, the job fails for good
    after max_attempts with the reason instead of going round forever, and the other job of
    the same batch is stored."""
    repo = JobRepository(engine, max_attempts=2)
    root = tmp_path / "images"
    probe = make_worker(repo, pipelines, root)
    first = await enqueue(repo, await user_factory(1), "doomed", model=tiny, seed=3)
    assert await probe.run_once() == 1
    (stored,) = await repo.images(first.id)
    folder = root / stored.path.split("/")[0]
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()
    folder.write_text("not a folder")  # every image whose hash starts so is refused

    doomed = await enqueue(repo, await user_factory(2), "doomed", model=tiny, seed=3)
    fine = await enqueue(repo, await user_factory(3), "fine", model=tiny, seed=4)
    worker = make_worker(repo, pipelines, root)
    assert await worker.run_once() == 1  # one batch: the fine job's image is stored
    served = await repo.get(fine.id)
    assert served is not None and served.status is JobStatus.DONE
    again = await repo.get(doomed.id)
    assert again is not None and again.status is JobStatus.QUEUED and again.attempts == 1
    assert await worker.run_once() == 0
    failed = await repo.get(doomed.id)
    assert failed is not None and failed.status is JobStatus.FAILED and failed.attempts == 2
    assert (failed.error or "").startswith("image store refused its image: ")
    assert await worker.run_once() is None  # nothing left going round
    sample = worker.metrics.registry.get_sample_value
    assert sample("dreamrate_worker_attempts_total", {"outcome": "failed"}) == 2
    assert sample("dreamrate_worker_store_down") == 0


def write_safety_checker(folder: Path, unsafe: Image.Image, safe: Image.Image) -> Path:
    """A tiny diffusers safety checker (random CLIP weights) whose one unsafe concept is
    ``unsafe``: images like it are flagged, images like ``safe`` are not, the threshold
    halfway between the two."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    tower = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**tower, "num_hidden_layers": 2},
        vision_config={**tower, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    with torch.no_grad():
        pixels = processor([unsafe, safe], return_tensors="pt").pixel_values
        embeds = checker.visual_projection(checker.vision_model(pixels)[1])
        unit = embeds / embeds.norm(dim=-1, keepdim=True)
        alike = float(unit[0] @ unit[1])
        assert alike < 0.99, f"the two images look alike to this checker ({alike:.4f})"
        checker.concept_embeds[0] = embeds[0]
        checker.concept_embeds_weights[0] = (1 + alike) / 2  # flagged: cosine above this
    checker.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


async def test_flagged_images_are_stored_flagged(
    repo, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The worker stores what the real checker says of each image: the checker here flags
    the job's first image and not its second (the same job, rendered first without it)."""
    from dreamrate.generation.safety import load_safety_checker

    user = await user_factory(1)
    plain = await enqueue(repo, user, "x", model=tiny, num_images=2, seed=3)
    assert await make_worker(repo, pipelines, tmp_path / "plain").run_once() == 2
    first, second = (
        Image.open(tmp_path / "plain" / row.path).convert("RGB")
        for row in await repo.images(plain.id)
    )
    assert [image.flagged for image in await repo.images(plain.id)] == [False, False]
    checker = load_safety_checker(str(write_safety_checker(tmp_path / "checker", first, second)))
    assert checker([second, first]) == [False, True]  # per image, in order

    job = await enqueue(repo, user, "x", model=tiny, num_images=2, seed=3)
    worker = make_worker(repo, pipelines, tmp_path / "checked", safety_checker=checker)
    assert await worker.run_once() == 2
    assert [image.flagged for image in await repo.images(job.id)] == [True, False]


def test_diffusers_safety_checker_flags_what_matches_its_concepts_only(tmp_path: Path) -> None:
    """The real diffusers safety checker path: red is the unsafe concept, blue is not."""
    from dreamrate.generation.safety import load_safety_checker

    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    checker = load_safety_checker(str(write_safety_checker(tmp_path, red, blue)))
    dark_red = Image.new("RGB", (64, 64), (200, 10, 10))
    assert checker([red, blue, dark_red, blue]) == [True, False, True, False]
    assert checker([]) == []


async def _forward_to(host: str, port: int) -> asyncio.Server:
    """A TCP forwarder to ``host:port`` on a port of its own, not accepting yet."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(forward, "127.0.0.1", 0, start_serving=False)


@pytest.mark.postgres
async def test_database_outage_is_retried_with_backoff_then_served_again(
    postgres_url: str, pipelines, tiny, tmp_path, caplog
) -> None:  # type: ignore[no-untyped-def]
    """While PostgreSQL refuses connections each failed claim waits twice as long as the one
    before, up to 30 s, with one line each; once it answers again the queue is served, and a
    later outage starts again from 1 s. The worker reaches it through a forwarder that
    accepts only while it is "up"; the waits are recorded, not spent."""
    import logging

    from sqlalchemy.engine import make_url

    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade
    from dreamrate.db.users import ensure_user

    url = make_url(postgres_url)
    direct = create_engine(postgres_url)
    await upgrade(direct)
    forwarder = await _forward_to(url.host or "127.0.0.1", url.port or 5432)
    port = forwarder.sockets[0].getsockname()[1]
    engine = create_engine(url.set(port=port).render_as_string(hide_password=False))
    waits: list[float] = []
    queued = []

    async def record(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 7:  # the database answers again, with a job waiting
            user = await ensure_user(direct, 1, "user1")
            queued.append(await enqueue(JobRepository(direct), user.id, "back", model=tiny))
            await forwarder.start_serving()
        elif len(waits) == 8:  # away again: the first retry waits 1 s again
            forwarder.close()
            await engine.dispose()
        elif len(waits) == 9:
            worker.stop.set()

    worker = make_worker(JobRepository(engine), pipelines, tmp_path, sleep=record)
    caplog.set_level(logging.WARNING, logger="dreamrate.generation.worker")
    try:
        await asyncio.wait_for(worker.run(), timeout=120)  # stops cleanly, never crashed
        done = await repo_get(JobRepository(direct), queued[0].id)
    finally:
        await engine.dispose()
        await direct.dispose()
        forwarder.close()
    # Seven refused claims, the job served, the empty queue polled at the usual pace; then
    # the next outage starts again from 1 s.
    assert waits == [1, 2, 4, 8, 16, 30, 30, worker.poll_interval, 1]
    assert done.status is JobStatus.DONE
    lines = [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(lines) == 8, lines
    for line, seconds in zip(lines, [*waits[:7], waits[8]], strict=True):
        assert line.endswith(f"retrying in {seconds:.0f}s") and "\n" not in line


async def test_a_hung_render_step_loses_its_lease_and_another_worker_finishes(
    engine, user_factory, pipelines, tiny, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import threading

    from dreamrate.generation.pipeline import load_text2image

    entered, release = threading.Event(), threading.Event()

    def hanging(model: str, **kwargs: object):  # type: ignore[no-untyped-def]
        # A pipeline whose second UNet call never returns, as a wedged GPU call does.
        pipe = load_text2image(model, **kwargs)
        calls = []

        def hang(module, args):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 2:
                entered.set()
                release.wait(120)

        pipe.unet.register_forward_pre_hook(hang)
        return pipe

    def short_lease() -> JobRepository:
        return JobRepository(
            engine, max_attempts=3, lease_seconds=1, per_user_cap=100, global_cap=10_000
        )

    stuck_repo, other_repo = short_lease(), short_lease()
    job = await enqueue(stuck_repo, await user_factory(1), "wedged", model=tiny, steps=4)
    stuck = GenerationWorker(
        repo=stuck_repo,
        store=FolderStore(tmp_path / "stuck"),
        pipelines=PipelineCache(device="cpu", loader=hanging),
        worker_id="stuck",
        progress_interval=0.05,
    )
    other = make_worker(other_repo, pipelines, tmp_path / "other", progress_interval=0.05)
    other.worker_id = "other"
    hung = asyncio.create_task(stuck.run_once())
    try:
        assert await asyncio.to_thread(entered.wait, 60)
        # The step never advances: no more renewals, the lease runs out, the other worker
        # reclaims the job (one attempt spent) and finishes it.
        for _ in range(400):
            if await other.run_once():
                break
            await asyncio.sleep(0.05)
        done = await repo_get(other_repo, job.id)
        assert done.status is JobStatus.DONE and done.attempts == 2
        assert len(await other_repo.images(job.id)) == 1
    finally:
        release.set()
    # The wedged call returns at last: the stalled worker stores nothing over the result.
    assert await asyncio.wait_for(hung, timeout=60) == 0
    assert not list((tmp_path / "stuck").rglob("*.png"))
    assert len(await other_repo.images(job.id)) == 1


async def repo_get(repo: JobRepository, job_id: int):  # type: ignore[no-untyped-def]
    job = await repo.get(job_id)
    assert job is not None
    return job
