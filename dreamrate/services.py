"""Building the long-lived services (queue, worker) from settings, and running the worker
in a process of its own beside the bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from dreamrate.core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.generation.queue import JobRepository
    from dreamrate.generation.store import ImageStore
    from dreamrate.generation.worker import GenerationWorker
    from dreamrate.generation.worker_metrics import WorkerMetrics

__all__ = ["WorkerProcess", "build_repository", "build_worker", "serve_queue"]

logger = logging.getLogger(__name__)


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
    settings: Settings,
    repo: JobRepository,
    *,
    worker_id: str | None = None,
    store: ImageStore | None = None,
    metrics: WorkerMetrics | None = None,
) -> GenerationWorker:
    """A worker with the configured store, device, batch size, optional safety checker and
    the active predictor to pick best-of-N candidates with. ``store`` is taken as checked;
    without it the settings' store is opened and checked here.

    Raises
    ------
    StorageError
        when the image store cannot be written (checked before anything loads).
    """
    from dreamrate.aesthetic.picker import CandidatePicker
    from dreamrate.core.devices import pick_device
    from dreamrate.generation.safety import load_safety_checker
    from dreamrate.generation.store import open_image_store
    from dreamrate.generation.worker import GenerationWorker, PipelineCache

    g = settings.generation
    if store is None:
        store = open_image_store(settings)
        store.check(write=True)  # a store this worker cannot write to stops it here, in one line
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
        poll_interval=g.poll_interval,
        safety_checker=checker,
        metrics=metrics,
        # CLIP and the predictor load at the first best-of-N job, not before.
        picker=CandidatePicker(
            repo.engine,
            embedding_model=settings.embedding.model,
            pretrained=settings.embedding.pretrained,
            device=settings.embedding.device,
        ),
    )


async def serve_queue(
    settings: Settings,
    worker_id: str | None = None,
    *,
    migrate: bool = False,
    metrics_port: int | None = None,
) -> None:
    """|coro| Serve the generation queue until SIGTERM/SIGINT (``dreamrate worker``, and the
    bot's worker process): the configured model is loaded before the first claim, and a
    stop finishes the current step and hands the batch back. With a metrics port
    (``metrics_port``, else DREAMRATE_METRICS_WORKER_PORT), /metrics and /healthz are served
    there.

    Raises
    ------
    StorageError, ConfigError
        when the store takes no write or the metrics port is taken: before anything loads.
    """
    from dreamrate.core.metrics import MetricsServer
    from dreamrate.database_setup import database
    from dreamrate.generation.store import open_image_store
    from dreamrate.generation.worker_metrics import WorkerMetrics

    # First: a store this worker cannot write to stops it in one line, before anything else.
    store = open_image_store(settings)
    await asyncio.to_thread(store.check, write=True)
    port = metrics_port if metrics_port is not None else settings.metrics.worker_port
    metrics = WorkerMetrics()
    server = MetricsServer(
        "worker", metrics.registry, checks={"database": _not_yet("the database is opening")}
    )
    if port is not None:
        await server.start(settings.metrics.host, port)
    try:
        async with database(settings, migrate=migrate) as engine:
            repo = build_repository(settings, engine)
            worker = build_worker(settings, repo, worker_id=worker_id, store=store, metrics=metrics)
            server.checks = worker.health_checks()
            server.refreshers.append(worker.refresh_metrics)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop.set)
            await worker.warm(settings.generation.model)
            await worker.run()
    finally:
        await server.stop()


def _not_yet(reason: str) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        return reason

    return check


def _serve_in_child(settings: Settings, worker_id: str | None, environ: dict[str, str]) -> None:
    # The forkserver's environment is the one it started with; this child runs with the bot's
    # environment of now, as a spawned one would (the image store's credentials, say).
    os.environ.clear()
    os.environ.update(environ)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch  # already imported by the forkserver, which read the variable at start

        torch.set_num_threads(int(threads))
    from dreamrate.core.log import configure_logging

    configure_logging(
        settings.log_level, secrets=settings.secrets(), log_format=settings.log_format
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bot decides when its worker stops
    asyncio.run(serve_queue(settings, worker_id))
    # Everything is committed and the batch handed back: skip the interpreter's slow teardown
    # of torch's thread pools.
    logging.shutdown()
    os._exit(0)


#: Imported once by the forkserver the worker children are forked from (see WorkerProcess).
CHILD_PRELOAD = ["dreamrate.generation.child_imports", "dreamrate.services"]


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context worker children start in: a forkserver that preloads
    :data:`CHILD_PRELOAD` (the preload takes effect when the forkserver first starts), or
    spawn where there is no forkserver (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(CHILD_PRELOAD)
    return context


class WorkerProcess:
    """The bot's generation worker in a process of its own.

    Loading a model and rendering hold the interpreter for long stretches; in the bot's own
    process that would delay acknowledgements (Discord allows 3 s), reactions and gateway
    heartbeats. In a child process they cannot. A child that dies is started again.

    Parameters
    ----------
    settings
        Passed to the child as they are (no environment round trip).
    worker_id
        The lease owner's name (default: host, pid and a random suffix, in the child).
    """

    #: Seconds between a child's unexpected exit and its replacement.
    RESTART_AFTER_S = 2.0

    def __init__(self, settings: Settings, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.stop = asyncio.Event()
        self.process: multiprocessing.process.BaseProcess | None = None

    async def run(self) -> None:
        """|coro| Keep a worker child running until :attr:`stop` is set (or cancelled)."""
        # A forkserver: a clean interpreter (no inherited loop or threads, as with spawn) that
        # imports torch and diffusers once; each child is a fork of it, so a restarted worker
        # is rendering in about a second instead of importing them again.
        context = worker_context()
        try:
            while not self.stop.is_set():
                self.process = context.Process(
                    target=_serve_in_child,
                    args=(self.settings, self.worker_id, dict(os.environ)),
                    name="dreamrate-worker",
                    daemon=True,
                )
                self.process.start()
                while self.process.is_alive() and not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=0.25)
                if not self.stop.is_set():
                    logger.error(
                        "generation worker exited (code %s); starting another",
                        self.process.exitcode,
                    )
                    await asyncio.sleep(self.RESTART_AFTER_S)
        finally:
            await self._terminate()

    async def _terminate(self) -> None:
        """SIGTERM: the child finishes its step and releases its batch; killed if it hangs."""
        process = self.process
        if process is None or not process.is_alive():
            return
        process.terminate()
        await asyncio.to_thread(process.join, 30)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join, 5)
