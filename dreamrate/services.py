"""Building the long-lived services (queue, worker) from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dreamrate.core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.generation.queue import JobRepository
    from dreamrate.generation.worker import GenerationWorker

__all__ = ["build_repository", "build_worker"]


def build_repository(settings: Settings, engine: AsyncEngine) -> JobRepository:
    """The job queue with the configured attempts, lease and caps."""
    from dreamrate.generation.queue import JobRepository

    g = settings.generation
    return JobRepository(
        engine,
        max_attempts=g.max_attempts,
        lease_seconds=g.lease_seconds,
        per_user_cap=g.per_user_queue_cap,
        global_cap=g.global_queue_cap,
    )


def build_worker(
    settings: Settings, repo: JobRepository, *, worker_id: str | None = None
) -> GenerationWorker:
    """A worker with the configured store, device, batch size and optional safety checker."""
    from dreamrate.core.devices import pick_device
    from dreamrate.core.paths import ensure_writable_dir
    from dreamrate.generation.safety import load_safety_checker
    from dreamrate.generation.store import ImageStore
    from dreamrate.generation.worker import GenerationWorker, PipelineCache

    g = settings.generation
    store = ImageStore(ensure_writable_dir(settings.images_dir, "DREAMRATE_STORAGE_IMAGES_DIR"))
    checker = (
        load_safety_checker(g.safety_checker, device=pick_device(g.device))
        if g.safety_checker
        else None
    )
    return GenerationWorker(
        repo=repo,
        store=store,
        pipelines=PipelineCache(device=g.device),
        worker_id=worker_id,
        max_batch=g.max_batch,
        safety_checker=checker,
    )
