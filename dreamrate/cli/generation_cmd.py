"""``dreamrate worker`` and ``dreamrate generate``: serve the queue, or render from the shell."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from typing import Annotated

import typer

from dreamrate.cli.cli_state import WorkerMetricsPort, state
from dreamrate.core.errors import DreamrateError, StorageError

__all__ = ["generate_cmd", "worker_cmd"]


class GenerationFailed(DreamrateError):
    """The job did not produce images."""

    exit_code = 1


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def worker_cmd(
    worker_id: Annotated[
        str | None, typer.Option("--id", help="Worker name (default host:pid:random).")
    ] = None,
    metrics_port: WorkerMetricsPort = None,
) -> None:
    """Serve the generation queue until SIGTERM/SIGINT (finishes the step, then releases its batch)."""
    from dreamrate.services import serve_queue

    asyncio.run(serve_queue(state.settings, worker_id, migrate=True, metrics_port=metrics_port))


def generate_cmd(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    negative: Annotated[str | None, typer.Option(help="What to avoid.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of image 0 (image i uses seed+i); random if absent.")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Denoising steps (default: the model's).")
    ] = None,
    guidance: Annotated[
        float | None, typer.Option(help="Guidance scale (default: the model's).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="N or WxH in pixels (default: the model's).")
    ] = None,
    images: Annotated[int, typer.Option(help="Images to make.")] = 1,
    best_of: Annotated[
        int,
        typer.Option(
            min=1,
            help="Candidates per image; the active predictor keeps the best (others kept back).",
        ),
    ] = 1,
    model: Annotated[
        str | None, typer.Option(help="Model (default DREAMRATE_GENERATION_MODEL).")
    ] = None,
    no_worker: Annotated[
        bool,
        typer.Option("--no-worker", help="Only enqueue and wait; another worker serves the queue."),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(min=1, help="Seconds to wait for the images (the job is cancelled after)."),
    ] = 600.0,
) -> None:
    """Enqueue one job with /dream's options and limits, wait, print one image path per line."""
    from dreamrate.community.requests import prepare_request, server_limits
    from dreamrate.database_setup import database
    from dreamrate.db.models import JobStatus
    from dreamrate.db.users import ensure_user
    from dreamrate.generation.request import GenerationLimits, RequestInput
    from dreamrate.generation.served_models import list_models
    from dreamrate.generation.store import open_image_store
    from dreamrate.generation.transitions import JobError
    from dreamrate.services import build_repository, build_worker

    settings = state.settings
    limits = GenerationLimits.from_settings(settings.generation)

    async def registered() -> dict[str, str]:
        async with database(settings) as engine:
            return {s.name: s.loads for s in await list_models(engine)}

    async def predictor_active() -> bool:
        from dreamrate.aesthetic.predictor_registry import active_predictor_path

        async with database(settings) as engine:
            return await active_predictor_path(engine) is not None

    chosen_model = model or limits.default_model
    if chosen_model not in limits.models:
        # Only a model the settings do not name sends us to the registry (and the database):
        # a bad request with a configured model is refused before anything is opened.
        limits = dataclasses.replace(limits, registered=asyncio.run(registered()))
    # The rules of /dream, outside any server: the settings' blocked terms, and best-of-N
    # only with an active predictor to pick with.
    active = 1 < best_of <= limits.max_best_of and asyncio.run(predictor_active())
    limits = server_limits(limits, None, predictor_active=active)
    request = prepare_request(
        RequestInput(
            prompt=prompt,
            negative=negative,
            seed=seed,
            steps=steps,
            guidance=guidance,
            images=images,
            model=chosen_model,
            best_of=best_of,
        ),
        limits,
        size,
    )
    for note in request.notes:
        typer.echo(f"note: {note}", err=True)

    async def run() -> list[str]:
        async with database(settings) as engine:
            repo = build_repository(settings, engine)
            # Before the job is queued: a store this worker cannot write leaves no job behind.
            worker = None if no_worker else build_worker(settings, repo)
            user = await ensure_user(engine, None, "cli")
            job = await repo.enqueue(request, requester_id=user.id, enforce_caps=False)
            typer.echo(
                f"job {job.id}: seed {job.seed}, {job.width}x{job.height}, {job.steps} steps",
                err=True,
            )
            deadline = time.monotonic() + timeout
            while True:
                current = await repo.get(job.id)
                assert current is not None
                if current.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED):
                    break
                if time.monotonic() > deadline:
                    # Nobody waits for it any more: it must not run later, unseen.
                    try:
                        await repo.cancel(job.id, by_user_id=user.id)
                    except JobError:  # it finished just now
                        continue
                    raise GenerationFailed(
                        f"job {job.id} still {current.status.value} after {timeout:.0f}s; cancelled"
                    )
                try:
                    made = None if worker is None else await worker.run_once()
                except StorageError:
                    # The store took no image and still refuses: nobody will wait for the
                    # job, so it must not run later, unseen (one line, exit code 2).
                    with contextlib.suppress(JobError):
                        await repo.cancel(job.id, by_user_id=user.id)
                    raise
                if made is None:
                    await asyncio.sleep(0.2)
            if current.status != JobStatus.DONE:
                raise GenerationFailed(
                    f"job {job.id} {current.status.value}: {current.error or 'no reason given'}"
                )
            rows = await repo.images(job.id)
            # A best-of-N job's passed-over candidates stay in the store, unlisted. Each line
            # is a file, or an s3:// URL with DREAMRATE_STORAGE_URL.
            store = worker.store if worker is not None else open_image_store(settings)
            return [store.location(image.path) for image in rows if not image.passed_over]

    for path in asyncio.run(run()):
        sys.stdout.write(path + "\n")
