"""The generation worker: claim a fair batch, render it, store the images, complete the jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from dreamrate.core.devices import DevicePreference
from dreamrate.core.errors import ModelError, StorageError
from dreamrate.db.engine import database_down
from dreamrate.generation.best_of import choose_best
from dreamrate.generation.pipeline import load_text2image, looks_like_path
from dreamrate.generation.queue import JobRecord, JobRepository, StoredImage
from dreamrate.generation.render import ImageSpec, render_images
from dreamrate.generation.served_models import NAME, get_model
from dreamrate.generation.store import ImageStore
from dreamrate.generation.worker_metrics import WorkerMetrics

__all__ = ["CandidatePicker", "GenerationWorker", "PipelineCache", "default_worker_id"]

logger = logging.getLogger(__name__)


class CandidatePicker(Protocol):
    """Scores best-of-N candidates (the shell passes the active predictor's)."""

    async def scores(
        self, images: Sequence[Any], run: Callable[..., Awaitable[Any]]
    ) -> list[float] | None:
        """|coro| One score per image, higher is better; None when nothing can score them.
        ``run`` runs blocking work on the worker's torch thread."""
        ...


def default_worker_id() -> str:
    """``host:pid:random``: unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class PipelineCache:
    """Loads each model once and keeps the most recent ones warm.

    A model that failed to load is not retried for ``retry_after`` seconds, so
    a bad model fails its jobs quickly while other models keep being served.
    """

    def __init__(
        self,
        loader: Callable[..., Any] = load_text2image,
        *,
        device: DevicePreference = "auto",
        max_models: int = 1,
        retry_after: float = 60.0,
    ) -> None:
        self._loader = loader
        self._device = device
        self._max_models = max_models
        self._retry_after = retry_after
        self._warm: OrderedDict[str, Any] = OrderedDict()
        self._failed: dict[str, tuple[float, ModelError]] = {}
        self._adapters: dict[str, set[str]] = {}  #: LoRA adapters loaded into each warm base
        self._lock = threading.Lock()
        self.loads = 0  #: base models loaded so far

    def get(self, model: str, adapter: tuple[str, str] | None = None) -> Any:
        """The pipeline for ``model``, loading it if needed (blocking; call from a thread),
        with the LoRA ``adapter`` ``(name, folder)`` on, or with every adapter off.

        Adapters are loaded into the warm base once and switched on and off after that:
        a registered LoRA never reloads its base."""
        with self._lock:
            pipeline = self._base(model)
            self._use(pipeline, model, adapter)
            return pipeline

    def _base(self, model: str) -> Any:
        if model in self._warm:
            self._warm.move_to_end(model)
            return self._warm[model]
        failed = self._failed.get(model)
        if failed is not None and time.monotonic() - failed[0] < self._retry_after:
            raise failed[1]
        while len(self._warm) >= self._max_models:
            evicted, _ = self._warm.popitem(last=False)
            self._adapters.pop(evicted, None)
        try:
            pipeline = self._loader(model, device=self._device)
        except ModelError as exc:
            self._failed[model] = (time.monotonic(), exc)
            raise
        self.loads += 1
        self._failed.pop(model, None)
        self._warm[model] = pipeline
        return pipeline

    def _use(self, pipeline: Any, model: str, adapter: tuple[str, str] | None) -> None:
        loaded = self._adapters.setdefault(model, set())
        if adapter is None:
            if loaded:
                pipeline.disable_lora()
            return
        name, folder = adapter
        if name not in loaded:
            try:
                pipeline.load_lora_weights(folder, adapter_name=name)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                # The folder stays in the worker's log; members see the job's error.
                logger.error("cannot load the LoRA in %s onto %s: %s", folder, model, exc)
                raise ModelError("the model's LoRA adapter could not be loaded") from None
            loaded.add(name)
        pipeline.enable_lora()
        pipeline.set_adapters([name])


@dataclass
class _BatchState:
    """Shared between the rendering thread and the heartbeat task."""

    total_steps: int
    steps_done: int = 0
    interrupt: threading.Event = field(default_factory=threading.Event)
    cancelled: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    stopping: bool = False
    #: No step for a whole lease: the batch is given up (its lease expires, others take it).
    stalled: bool = False
    #: Rendering has ended: the heartbeat finishes the beat it is in and stops.
    rendered: asyncio.Event = field(default_factory=asyncio.Event)

    def on_step(self) -> bool:
        self.steps_done += 1
        return not self.interrupt.is_set()


class GenerationWorker:
    """Serves the queue: one batch at a time, heartbeating while the GPU works.

    Parameters
    ----------
    repo
        The job queue.
    store
        Where images are written (a local folder, or S3 that every host reaches). When it
        takes no image, the batch goes back to the queue with the reason, and no batch is
        claimed until it takes a test write again.
    pipelines
        Warm diffusers pipelines by model.
    worker_id
        Unique name of this worker (lease owner).
    max_batch
        Most images in one pipeline call.
    progress_interval
        Seconds between progress writes (each also renews the lease).
    safety_checker
        Optional callable flagging unsafe images; flagged images are stored as flagged.
    picker
        Scores candidates for best-of-N jobs (the active predictor); the best
        ``num_images`` of each such job are posted, the rest stored as passed over.
    metrics
        Where the worker counts its batches, images and attempts (default: a registry of its
        own; ``dreamrate worker --metrics-port`` serves it).
    sleep
        How :meth:`run` waits between polls of an empty queue and between retries while the
        database is away (default: that many seconds, cut short by :attr:`stop`). Tests pass
        one that records the waits instead of spending them.
    """

    def __init__(
        self,
        *,
        repo: JobRepository,
        store: ImageStore,
        pipelines: PipelineCache,
        worker_id: str | None = None,
        max_batch: int = 4,
        progress_interval: float = 1.0,
        poll_interval: float = 0.5,
        safety_checker: Callable[[list[Any]], list[bool]] | None = None,
        picker: CandidatePicker | None = None,
        metrics: WorkerMetrics | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.repo = repo
        self.store = store
        self.pipelines = pipelines
        self.worker_id = worker_id or default_worker_id()
        self.max_batch = max_batch
        self.progress_interval = min(progress_interval, repo.lease.total_seconds() / 3)
        self.poll_interval = poll_interval
        self.safety_checker = safety_checker
        self.picker = picker
        self.metrics = metrics or WorkerMetrics()
        self._sleep = sleep or self._sleep_unless_stopped
        #: The last batch could not be stored: prove the store works before claiming again.
        self._store_down = False
        self.metrics.store_down.set_function(lambda: float(self._store_down))
        self.stop = asyncio.Event()
        # All torch work on one thread: each new calling thread gets its own OpenMP
        # pool, and several spinning pools on a few cores slow rendering down ~2x.
        self._torch_thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="dreamrate-render"
        )

    async def _on_torch_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._torch_thread, fn, *args)

    async def warm(self, model: str) -> None:
        """|coro| Load ``model`` before the first claim, so the first batch does not wait for it
        (a model that fails to load is logged; its jobs fail when they come)."""
        try:
            await self._on_torch_thread(self.pipelines.get, model)
        except ModelError as exc:
            logger.error("worker %s: %s", self.worker_id, exc.message)

    async def run(self) -> None:
        """Serve until :attr:`stop` is set; database and image store outages are retried
        with backoff."""
        logger.info("worker %s serving the queue", self.worker_id)
        backoff = 1.0
        while not self.stop.is_set():
            try:
                made = await self.run_once()
                backoff = 1.0
            except (SQLAlchemyError, OSError) as exc:
                reason = (str(getattr(exc, "orig", None) or exc).splitlines() or ["?"])[0][:200]
                logger.warning("database unavailable (%s); retrying in %.0fs", reason, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            except StorageError as exc:
                logger.warning("image store unavailable: %s; retrying in %.0fs", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if made is None:
                await self._sleep(self.poll_interval)
        logger.info("worker %s stopped", self.worker_id)

    async def _store_works(self) -> bool:
        """|coro| Whether the store takes a test write now (after it refused an image)."""
        try:
            await asyncio.to_thread(self.store.check, write=True)
        except StorageError:
            return False
        return True

    async def refresh_metrics(self) -> None:
        """|coro| Read the queue's depth into the metrics (before each scrape)."""
        queued, running = await self.repo.depth()
        self.metrics.queued.set(queued)
        self.metrics.running.set(running)

    def health_checks(self) -> dict[str, Callable[[], Awaitable[str | None]]]:
        """What this worker needs to be ready: the database, and a store that takes writes."""

        async def store() -> str | None:
            return "the image store refuses writes" if self._store_down else None

        return {"database": lambda: database_down(self.repo.engine), "store": store}

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def run_once(self) -> int | None:
        """Claim and process one batch; the number of images made, None when the queue was empty.

        Raises
        ------
        StorageError
            when the last batch could not be stored and the store still refuses a test
            write (nothing is claimed meanwhile).
        """
        if self._store_down:
            await asyncio.to_thread(self.store.check, write=True)
            self._store_down = False
            logger.info("image store takes writes again")
        jobs = await self.repo.claim_batch(self.worker_id, max_images=self.max_batch)
        if not jobs:
            return None
        return await self.process(jobs)

    async def process(self, jobs: list[JobRecord]) -> int:
        """Run one claimed batch to its end: done, failed, cancelled or released."""
        lead = jobs[0]
        started = time.perf_counter()
        # 1. Pipeline (loaded once, kept warm; a registered name resolves to its model, or to
        # its LoRA on a warm base). Batches hold one model name, so adapters never mix.
        try:
            spec = await get_model(self.repo.engine, lead.model)
            if spec is None and NAME.match(lead.model) and not looks_like_path(lead.model):
                raise ModelError(f"model {lead.model} is not registered any more")
            target, adapter = (lead.model, None) if spec is None else (spec.loads, spec.adapter)
            pipeline = await self._on_torch_thread(self.pipelines.get, target, adapter)
        except ModelError as exc:
            for job in jobs:
                await self.repo.fail(self.worker_id, job.id, exc.message, retry=False)
            self.metrics.attempts.labels("failed").inc(len(jobs))
            logger.error(
                "model %s failed to load; failed job(s) %s", lead.model, [j.id for j in jobs]
            )
            return 0
        loaded = time.perf_counter()

        # 2. Render, heartbeating meanwhile
        specs = [
            ImageSpec(job.prompt, job.negative_prompt, seed) for job in jobs for seed in job.seeds
        ]
        chunks = [specs[i : i + self.max_batch] for i in range(0, len(specs), self.max_batch)]
        state = _BatchState(total_steps=lead.steps * len(chunks))
        beat = asyncio.create_task(self._heartbeat(jobs, state))
        try:
            images = await self._on_torch_thread(self._render, pipeline, lead, chunks, state)
        except Exception as exc:
            # The heartbeat ends its beat first: a beat cancelled mid-write could leave its
            # transaction (on SQLite, the database's one write lock) to the writes below.
            state.rendered.set()
            await beat
            reason = f"generation failed: {type(exc).__name__}: {exc}"[:500]
            logger.exception("batch %s failed", [j.id for j in jobs])
            for job in jobs:
                await self.repo.fail(self.worker_id, job.id, reason, retry=True)
            self.metrics.attempts.labels("failed").inc(len(jobs))
            return 0
        finally:
            state.rendered.set()
            if not beat.done():
                # Rendering was cancelled (the worker is shutting down): let the beat end
                # its write, unless this task is cancelled again meanwhile.
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
        rendered = time.perf_counter()
        if state.stalled:
            # Storing a late or partial result would race whoever took the jobs over. Jobs
            # still ours go back to the queue with this attempt counted (a render that
            # always hangs fails in the end, saying so); others' are untouched.
            reason = "a render step made no progress for a whole lease"
            for job in jobs:
                await self.repo.fail(self.worker_id, job.id, reason, retry=True)
            self.metrics.attempts.labels("failed").inc(len(jobs))
            logger.warning("batch %s: gave up a stalled render", [j.id for j in jobs])
            return 0
        if state.stopping:
            released = await self.repo.release(self.worker_id, [j.id for j in jobs])
            self.metrics.attempts.labels("released").inc(released)
            logger.info("shutting down: released %d job(s) back to the queue", released)
            return 0

        self.metrics.batch(len(images), rendered - loaded)

        # 3. Safety check
        flags = [False] * len(images)
        if self.safety_checker is not None:
            flags = await self._on_torch_thread(self.safety_checker, images)

        # 4. Persist, job by job; once the store refuses, the rest of the batch goes back.
        made = 0
        offset = 0
        refused: StorageError | None = None
        for job in jobs:
            mine = list(
                zip(
                    images[offset : offset + job.renders],
                    flags[offset : offset + job.renders],
                    strict=True,
                )
            )
            offset += job.renders
            if job.id in state.cancelled or job.id in state.lost:
                await self.repo.complete(
                    self.worker_id, job.id, []
                )  # ends as cancelled, or is a no-op
                self.metrics.attempts.labels("cancelled").inc()
                continue
            if refused is None:
                picked, predicted = await self._pick(job, mine)
                try:
                    stored = await asyncio.to_thread(self._store, job, mine, picked, predicted)
                except StorageError as exc:
                    if await self._store_works():
                        # The store takes writes but not this job's images: the job's fault,
                        # so the attempt counts (it fails for good after max_attempts instead
                        # of going round forever) and the rest of the batch is stored.
                        reason = f"image store refused its image: {exc.message}"
                        await self.repo.fail(self.worker_id, job.id, reason, retry=True)
                        self.metrics.attempts.labels("failed").inc()
                        logger.error("job %s: %s", job.id, reason)
                        continue
                    refused = exc
            if refused is not None:
                # The store's fault, not the job's: back to the queue, the attempt not
                # counted. Images already written have no row yet; they are whole (and the
                # same bytes, under the same name, when the job is rendered again).
                await self.repo.release(
                    self.worker_id, [job.id], reason=f"image store: {refused.message}"
                )
                self.metrics.attempts.labels("released").inc()
                continue
            if await self.repo.complete(self.worker_id, job.id, stored):
                made += len(stored)
                self.metrics.attempts.labels("done").inc()
        self.metrics.images.inc(made)
        if refused is not None:
            self._store_down = True
            logger.error(
                "batch %s: %s; its unstored job(s) went back to the queue",
                [j.id for j in jobs],
                refused.message,
            )
        logger.info(
            "batch of %d job(s), %d image(s) %dx%d, %d steps: load %.2fs, render %.2fs, store %.2fs",
            len(jobs),
            len(images),
            lead.width,
            lead.height,
            lead.steps,
            loaded - started,
            rendered - loaded,
            time.perf_counter() - rendered,
        )
        return made

    def _render(
        self, pipeline: Any, lead: JobRecord, chunks: list[list[ImageSpec]], state: _BatchState
    ) -> list[Any]:
        images: list[Any] = []
        for chunk in chunks:
            if state.interrupt.is_set():
                break
            images += render_images(
                pipeline,
                chunk,
                width=lead.width,
                height=lead.height,
                steps=lead.steps,
                guidance=lead.guidance,
                on_step=state.on_step,
            )
        return images

    async def _pick(
        self, job: JobRecord, images: list[tuple[Any, bool]]
    ) -> tuple[list[bool], list[float] | None]:
        """Which candidates of ``job`` are posted, and their predicted scores."""
        flags = [flagged for _, flagged in images]
        if job.best_of == 1:
            return [True] * len(images), None
        scores = None
        if self.picker is not None:
            scores = await self.picker.scores([image for image, _ in images], self._on_torch_thread)
        if scores is None:
            logger.warning(
                "job %s: no active predictor to pick the best of %d; posting the first %d",
                job.id, len(images), job.num_images,
            )  # fmt: skip
        return choose_best(scores, flags, job.num_images), scores

    def _store(
        self,
        job: JobRecord,
        images: list[tuple[Any, bool]],
        picked: list[bool],
        predicted: list[float] | None,
    ) -> list[StoredImage]:
        stored = []
        for index, ((image, flagged), seed) in enumerate(zip(images, job.seeds, strict=True)):
            digest, path = self.store.save(image)
            stored.append(
                StoredImage(
                    index, seed, image.width, image.height, digest, path, flagged,
                    passed_over=not picked[index],
                    predicted=None if predicted is None else predicted[index],
                )
            )  # fmt: skip
        return stored

    async def _heartbeat(self, jobs: list[JobRecord], state: _BatchState) -> None:
        """Renew the batch's lease while rendering advances. A step that hangs (a stuck GPU
        call) stops the renewals: the lease runs out and another worker takes the jobs."""
        ids = {job.id for job in jobs}
        lease = self.repo.lease.total_seconds()
        seen, moved_at = -1, time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.rendered.wait(), timeout=self.progress_interval)
            if state.rendered.is_set():
                return
            if self.stop.is_set():
                state.stopping = True
                state.interrupt.set()
            now = time.monotonic()
            if state.steps_done != seen:
                seen, moved_at = state.steps_done, now
            elif now - moved_at > lease:
                if not state.stalled:
                    logger.error(
                        "batch %s: no render step for %.0f s; letting its lease run out",
                        sorted(ids),
                        now - moved_at,
                    )
                state.stalled = True
                state.interrupt.set()
                continue
            active = ids - state.lost
            progress = min(state.steps_done / max(state.total_steps, 1), 0.99)
            try:
                beat = await self.repo.heartbeat(self.worker_id, active, progress=progress)
            except (SQLAlchemyError, OSError) as exc:
                logger.warning("heartbeat failed (%s); will retry", type(exc).__name__)
                continue
            state.lost |= active - beat.owned
            state.cancelled |= beat.cancel
            if not (ids - state.cancelled - state.lost):
                state.interrupt.set()  # nobody wants this batch any more
