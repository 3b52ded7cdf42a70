"""The durable job queue: every state change of a generation job, in one repository.

Claims are atomic on both backends. PostgreSQL: ``SELECT ... FOR UPDATE SKIP
LOCKED``, so any number of workers on any number of hosts share one queue.
SQLite: the claim runs inside ``BEGIN IMMEDIATE`` (one writer at a time) and
marks its rows with ``UPDATE ... RETURNING``. The hot path (claim, heartbeat,
complete) is SQLAlchemy Core on one connection: a few statements per call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from dreamrate.db.models import Image, Job, JobStatus, User
from dreamrate.db.types import UTCDateTime, utcnow
from dreamrate.generation.request import MAX_SEED, GenerationRequest
from dreamrate.generation.scheduling import fill_batch, jobs_ahead
from dreamrate.generation.transitions import JobError, status_after_cancel, status_after_failure

__all__ = [
    "HeartbeatResult",
    "JobRecord",
    "JobRepository",
    "QueueFullError",
    "QueueInfo",
    "StoredImage",
]

logger = logging.getLogger(__name__)

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
JOBS = Job.__table__
#: What a job costs a worker: every candidate it renders (best-of-N renders N per image).
RENDERS = (Job.num_images * Job.best_of).label("renders")
_CLAIM_COLUMNS = (
    Job.id,
    Job.requester_id,
    Job.num_images,
    RENDERS,
    Job.model,
    Job.width,
    Job.height,
    Job.steps,
    Job.guidance,
    Job.scheduler,
)


# The hot path's statements are built once: building them costs as much as running them.
_NOW = bindparam("now", type_=UTCDateTime())
_LEAD = (
    select(*_CLAIM_COLUMNS)
    .join(User, User.id == Job.requester_id)
    .where(Job.status == JobStatus.QUEUED)
    .order_by(Job.priority.desc(), User.last_served_at.asc().nulls_first(), Job.created_at, Job.id)
    .limit(1)
)
_CLAIM = (
    update(Job)
    .where(Job.id.in_(bindparam("ids", expanding=True)), Job.status == JobStatus.QUEUED)
    .values(
        status=JobStatus.RUNNING,
        lease_owner=bindparam("worker"),
        lease_expires_at=bindparam("expires", type_=UTCDateTime()),
        heartbeat_at=_NOW,
        attempts=Job.attempts + 1,
        started_at=func.coalesce(Job.started_at, _NOW),
        progress=0.0,
        updated_at=_NOW,
    )
    .returning(*JOBS.c)
)
_SERVED = (
    update(User).where(User.id.in_(bindparam("users", expanding=True))).values(last_served_at=_NOW)
)
_COMPLETE = (
    update(Job)
    .where(
        Job.id == bindparam("job"),
        Job.lease_owner == bindparam("worker"),
        Job.status == JobStatus.RUNNING,
    )
    .values(
        status=case((Job.cancel_requested, JobStatus.CANCELLED.value), else_=JobStatus.DONE.value),
        progress=case((Job.cancel_requested, Job.progress), else_=1.0),
        lease_owner=None,
        lease_expires_at=None,
        finished_at=_NOW,
        updated_at=_NOW,
    )
    .returning(Job.cancel_requested)
)


class QueueFullError(JobError):
    """The queue is full; try again later."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """A frozen snapshot of a job row: what workers and the bot pass around."""

    id: int
    requester_id: int
    guild_id: int | None
    channel_id: int | None
    prompt: str
    negative_prompt: str | None
    model: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    num_images: int
    best_of: int
    seed: int
    status: JobStatus
    priority: int
    attempts: int
    lease_owner: str | None
    progress: float
    cancel_requested: bool
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | Job) -> JobRecord:
        """From a Core row mapping or an ORM ``Job``."""
        get = row.__getitem__ if isinstance(row, Mapping) else row.__getattribute__
        return cls(**{name: get(name) for name in cls.__slots__})  # type: ignore[attr-defined]

    @property
    def seeds(self) -> list[int]:
        """Image i of a job uses seed + i (wrapping past MAX_SEED), as Automatic1111 does;
        a best-of-N job renders ``num_images * best_of`` candidates, seed + i each."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.renders)]

    @property
    def renders(self) -> int:
        """Images a worker renders for this job (candidates included)."""
        return self.num_images * self.best_of


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image already written to the image store, to be recorded with its job."""

    index: int
    seed: int
    width: int
    height: int
    sha256: str
    path: str
    flagged: bool = False
    #: A best-of-N candidate the predictor did not pick (kept, never posted).
    passed_over: bool = False
    #: The predictor's score of a best-of-N candidate.
    predicted: float | None = None


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    owned: frozenset[int]  #: jobs this worker still holds
    cancel: frozenset[int]  #: of those, the ones whose cancellation was requested


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """Where a job stands, for display."""

    status: JobStatus
    position: int | None  #: 1 = next; None once it is no longer queued
    eta_seconds: float | None  #: None until there is throughput to go by


class JobRepository:
    """All queue SQL: enqueue, claim, heartbeat, progress, complete, fail, cancel, reap.

    Parameters
    ----------
    engine
        Async engine (SQLite or PostgreSQL).
    max_attempts
        Claims of one job before it fails for good.
    lease_seconds
        How long a claim lasts without a heartbeat.
    per_user_cap, global_cap
        Most active (queued or running) jobs per user, and queued jobs in total,
        enforced at enqueue.
    clock
        The queue's time, an aware UTC datetime (default: the system clock). Leases,
        heartbeats, reaping and finish times all read it, so a test moves it on instead of
        waiting a lease out.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_attempts: int = 3,
        lease_seconds: float = 120.0,
        per_user_cap: int = 2,
        global_cap: int = 200,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease_seconds)
        self.per_user_cap = per_user_cap
        self.global_cap = global_cap
        self._is_pg = engine.dialect.name == "postgresql"
        self._clock = clock
        self._next_reap: datetime | None = None
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite: take the write lock at BEGIN, so check-then-write is atomic.
        self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_engine.begin() as conn:
            yield conn

    def _locked(self, query: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        return query.with_for_update(of=JOBS, skip_locked=skip_locked) if self._is_pg else query

    # -- enqueue ----------------------------------------------------------------------

    async def enqueue(
        self,
        request: GenerationRequest,
        *,
        requester_id: int,
        guild_id: int | None = None,
        channel_id: int | None = None,
        priority: int = 0,
        interaction_token: str | None = None,
        interaction_token_expires_at: datetime | None = None,
        interaction_id: int | None = None,
        enforce_caps: bool = True,
    ) -> JobRecord:
        """Queue a validated request.

        With ``interaction_id``, enqueueing is idempotent: a retry after a commit whose
        answer was lost (a dropped connection) returns the job already queued for it.

        Raises
        ------
        QueueFullError
            when the requester already has ``per_user_cap`` active jobs or the
            queue holds ``global_cap``.
        """
        if interaction_id is not None:
            existing = await self._for_interaction(interaction_id)
            if existing is not None:
                return existing
        try:
            return await self._insert(
                request,
                requester_id=requester_id,
                guild_id=guild_id,
                channel_id=channel_id,
                priority=priority,
                interaction_token=interaction_token,
                interaction_token_expires_at=interaction_token_expires_at,
                interaction_id=interaction_id,
                enforce_caps=enforce_caps,
            )
        except IntegrityError:
            found = None if interaction_id is None else await self._for_interaction(interaction_id)
            if found is None:
                raise
            return found  # the same interaction, queued by a concurrent attempt

    async def _for_interaction(self, interaction_id: int) -> JobRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(*JOBS.c).where(Job.interaction_id == interaction_id))
            ).one_or_none()
        return JobRecord.from_row(row._mapping) if row is not None else None

    async def _insert(
        self,
        request: GenerationRequest,
        *,
        requester_id: int,
        guild_id: int | None,
        channel_id: int | None,
        priority: int,
        interaction_token: str | None,
        interaction_token_expires_at: datetime | None,
        interaction_id: int | None,
        enforce_caps: bool,
    ) -> JobRecord:
        async with self._write() as conn:
            if enforce_caps:
                if self._is_pg:
                    # Serialise one user's enqueues so two parallel /dream cannot both pass the cap.
                    await conn.execute(
                        select(User.id).where(User.id == requester_id).with_for_update()
                    )
                mine = await conn.scalar(
                    select(func.count()).where(
                        Job.requester_id == requester_id, Job.status.in_(ACTIVE)
                    )
                )
                if (mine or 0) >= self.per_user_cap:
                    raise QueueFullError(
                        f"You already have {mine} jobs waiting or running (the limit is "
                        f"{self.per_user_cap}); wait for one to finish."
                    )
                total = await conn.scalar(
                    select(func.count()).where(Job.status == JobStatus.QUEUED)
                )
                if (total or 0) >= self.global_cap:
                    raise QueueFullError(
                        f"The queue is full ({total} jobs waiting); try again in a few minutes."
                    )
            row = (
                await conn.execute(
                    insert(Job)
                    .values(
                        requester_id=requester_id,
                        guild_id=guild_id,
                        channel_id=channel_id,
                        prompt=request.prompt,
                        negative_prompt=request.negative_prompt,
                        model=request.model,
                        width=request.width,
                        height=request.height,
                        steps=request.steps,
                        guidance=request.guidance,
                        scheduler=request.scheduler,
                        num_images=request.num_images,
                        best_of=request.best_of,
                        seed=request.seed,
                        priority=priority,
                        interaction_token=interaction_token,
                        interaction_token_expires_at=interaction_token_expires_at,
                        interaction_id=interaction_id,
                    )
                    .returning(*JOBS.c)
                )
            ).one()
            return JobRecord.from_row(row._mapping)

    # -- claim ------------------------------------------------------------------------

    async def claim_batch(self, worker_id: str, *, max_images: int) -> list[JobRecord]:
        """Claim the next batch: the least recently served user's oldest job, plus
        compatible jobs of other users (round-robin) up to ``max_images`` images.

        A job larger than ``max_images`` is claimed alone. Expired leases are
        reaped first (at most every few seconds). Returns ``[]`` when nothing is queued.
        """
        now = self._clock()
        reap_every = timedelta(seconds=min(self.lease.total_seconds() / 4, 5.0))
        async with self._write() as conn:
            # A mark further ahead than reap_every means the clock was set back: reap now.
            if self._next_reap is None or not now < self._next_reap <= now + reap_every:
                await self._reap(conn, now)
                self._next_reap = now + reap_every
            lead = (await conn.execute(self._locked(_LEAD, skip_locked=True))).one_or_none()
            if lead is None:
                return []
            capacity = max(max_images, lead.renders)
            chosen = [lead]
            if lead.renders < capacity:
                candidates = await self._candidates(conn, lead, capacity)
                chosen += fill_batch(candidates, first=lead, capacity=capacity)
            ids = [job.id for job in chosen]
            rows = await conn.execute(
                _CLAIM, {"ids": ids, "worker": worker_id, "expires": now + self.lease, "now": now}
            )
            claimed = {row.id: JobRecord.from_row(row._mapping) for row in rows}
            served = sorted({job.requester_id for job in claimed.values()})
            if self._is_pg and len(served) > 1:
                # Lock users in id order: concurrent claims serving overlapping users
                # would otherwise deadlock on the UPDATE below.
                await conn.execute(
                    select(User.id).where(User.id.in_(served)).order_by(User.id).with_for_update()
                )
            await conn.execute(_SERVED, {"users": served, "now": now})
        return [claimed[i] for i in ids if i in claimed]

    async def _candidates(self, conn: AsyncConnection, lead: Any, capacity: int) -> list[Any]:
        """Queued jobs that can share ``lead``'s pipeline call, each user's oldest first.

        Ranking within each user (a window function) keeps one user's long
        queue from crowding everyone else out of the candidate list.
        """
        rank = (
            func.row_number()
            .over(partition_by=Job.requester_id, order_by=(Job.created_at, Job.id))
            .label("rank")
        )
        ranked = (
            select(Job.id, Job.priority, Job.created_at, User.last_served_at, rank)
            .join(User, User.id == Job.requester_id)
            .where(
                Job.status == JobStatus.QUEUED,
                Job.id != lead.id,
                Job.model == lead.model,
                Job.width == lead.width,
                Job.height == lead.height,
                Job.steps == lead.steps,
                Job.guidance == lead.guidance,
                Job.scheduler == lead.scheduler,
                capacity - lead.renders >= RENDERS,
            )
            .subquery()
        )
        ids = list(
            (
                await conn.execute(
                    select(ranked.c.id)
                    .where(ranked.c.rank <= capacity)
                    .order_by(
                        ranked.c.priority.desc(),
                        ranked.c.rank,
                        ranked.c.last_served_at.asc().nulls_first(),
                        ranked.c.created_at,
                        ranked.c.id,
                    )
                    .limit(capacity * 4)
                )
            ).scalars()
        )
        if not ids:
            return []
        # PostgreSQL cannot lock the rows of a windowed query: lock the chosen ids
        # now, skipping any that another worker took meanwhile.
        rows = (
            await conn.execute(
                self._locked(
                    select(*_CLAIM_COLUMNS).where(Job.id.in_(ids), Job.status == JobStatus.QUEUED),
                    skip_locked=True,
                )
            )
        ).all()
        position = {job_id: i for i, job_id in enumerate(ids)}
        return sorted(rows, key=lambda row: position[row.id])

    async def _reap(self, conn: AsyncConnection, now: datetime) -> None:
        expired = (Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        released = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
        await conn.execute(
            update(Job)
            .where(*expired, Job.cancel_requested.is_(True))
            .values(status=JobStatus.CANCELLED, finished_at=now, **released)
        )
        failed = (
            (
                await conn.execute(
                    update(Job)
                    .where(*expired, Job.attempts >= self.max_attempts)
                    .values(
                        status=JobStatus.FAILED,
                        error=f"a worker stopped responding {self.max_attempts} times while running this job",
                        finished_at=now,
                        **released,
                    )
                    .returning(Job.id)
                )
            )
            .scalars()
            .all()
        )
        requeued = (
            (
                await conn.execute(
                    update(Job)
                    .where(*expired)
                    .values(status=JobStatus.QUEUED, progress=0.0, **released)
                    .returning(Job.id)
                )
            )
            .scalars()
            .all()
        )
        if failed or requeued:
            logger.warning(
                "expired leases: requeued job(s) %s, failed job(s) %s",
                list(requeued) or "none",
                list(failed) or "none",
            )

    # -- while running ----------------------------------------------------------------

    async def heartbeat(
        self, worker_id: str, job_ids: Iterable[int], *, progress: float | None = None
    ) -> HeartbeatResult:
        """Extend the lease of the jobs this worker still holds (optionally recording progress)."""
        ids = list(job_ids)
        if not ids:
            return HeartbeatResult(frozenset(), frozenset())
        now = self._clock()
        values: dict[str, object] = {"lease_expires_at": now + self.lease, "heartbeat_at": now}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, progress))
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    update(Job)
                    .where(
                        Job.id.in_(ids),
                        Job.lease_owner == worker_id,
                        Job.status == JobStatus.RUNNING,
                    )
                    .values(**values)
                    .returning(Job.id, Job.cancel_requested)
                )
            ).all()
        return HeartbeatResult(
            owned=frozenset(r.id for r in rows),
            cancel=frozenset(r.id for r in rows if r.cancel_requested),
        )

    # -- finishing --------------------------------------------------------------------

    async def complete(self, worker_id: str, job_id: int, images: Sequence[StoredImage]) -> bool:
        """Record the job's images and mark it done; idempotent.

        Returns False, recording nothing, when this worker no longer holds the
        job (its lease expired and another worker took it, or it was finished
        already), so a late worker never duplicates images. A job whose
        cancellation was requested ends as cancelled instead.
        """
        now = self._clock()
        async with self._write() as conn:
            row = (
                await conn.execute(_COMPLETE, {"job": job_id, "worker": worker_id, "now": now})
            ).one_or_none()
            if row is None:
                logger.warning(
                    "job %s: not held by %s any more; its result is dropped", job_id, worker_id
                )
                return False
            if row.cancel_requested:
                return False
            if images:
                await conn.execute(
                    insert(Image),
                    [
                        {
                            "job_id": job_id,
                            "index": image.index,
                            "seed": image.seed,
                            "width": image.width,
                            "height": image.height,
                            "sha256": image.sha256,
                            "path": image.path,
                            "flagged": image.flagged,
                            "passed_over": image.passed_over,
                            "predicted": image.predicted,
                        }
                        for image in images
                    ],
                )
        return True

    async def _lock_job(self, conn: AsyncConnection, job_id: int) -> Any:
        return (
            await conn.execute(self._locked(select(*JOBS.c).where(Job.id == job_id)))
        ).one_or_none()

    async def fail(
        self, worker_id: str, job_id: int, error: str, *, retry: bool
    ) -> JobStatus | None:
        """Give a held job back after an error: requeued when ``retry`` and attempts
        remain, else failed with ``error`` stored. None if the job is not held."""
        now = self._clock()
        async with self._write() as conn:
            job = await self._lock_job(conn, job_id)
            if job is None or job.status != JobStatus.RUNNING or job.lease_owner != worker_id:
                return None
            status = status_after_failure(
                cancel_requested=job.cancel_requested,
                retry=retry,
                attempts=job.attempts,
                max_attempts=self.max_attempts,
            )
            await conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status=status,
                    error=error[:2000],
                    lease_owner=None,
                    lease_expires_at=None,
                    progress=0.0,
                    finished_at=None if status is JobStatus.QUEUED else now,
                    updated_at=now,
                )
            )
            return status

    async def release(
        self, worker_id: str, job_ids: Iterable[int], *, reason: str | None = None
    ) -> int:
        """Hand held jobs back to the queue untouched (a graceful shutdown, or a store that
        took no images: the worker's fault, not the job's); the attempt is not counted.
        ``reason``, when given, is kept as the job's error until it runs again."""
        extra = {} if reason is None else {"error": reason[:2000]}
        async with self._write() as conn:
            result = await conn.execute(
                update(Job)
                .where(
                    Job.id.in_(list(job_ids)),
                    Job.lease_owner == worker_id,
                    Job.status == JobStatus.RUNNING,
                )
                .values(
                    status=JobStatus.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    progress=0.0,
                    attempts=Job.attempts - 1,
                    updated_at=self._clock(),
                    **extra,
                )
            )
            return result.rowcount or 0

    async def cancel(
        self, job_id: int, *, by_user_id: int, is_moderator: bool = False
    ) -> JobStatus:
        """Cancel a job: at once when queued, at the worker's next step when running.

        Raises
        ------
        JobError
            when the job does not exist, is not the caller's (and the caller is
            no moderator), or is already finished.
        """
        now = self._clock()
        async with self._write() as conn:
            job = await self._lock_job(conn, job_id)
            if job is None:
                raise JobError(f"There is no job {job_id}.")
            status = status_after_cancel(
                job_id,
                JobStatus(job.status),
                is_requester=job.requester_id == by_user_id,
                is_moderator=is_moderator,
            )
            values = {"status": status, "finished_at": now} if status is JobStatus.CANCELLED else {}
            await conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(cancel_requested=True, updated_at=now, **values)
            )
            return status

    # -- reading ----------------------------------------------------------------------

    async def get(self, job_id: int) -> JobRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*JOBS.c).where(Job.id == job_id))).one_or_none()
        return JobRecord.from_row(row._mapping) if row is not None else None

    async def images(self, job_id: int) -> list[Image]:
        async with self._read() as session:
            query = select(Image).where(Image.job_id == job_id).order_by(Image.index)
            return list((await session.execute(query)).scalars())

    async def queue_info(self, job_id: int) -> QueueInfo:
        """Position in the queue under round-robin service, and an ETA from recent throughput."""
        async with self.engine.connect() as conn:
            job = (
                await conn.execute(select(Job.status, RENDERS).where(Job.id == job_id))
            ).one_or_none()
            if job is None:
                raise JobError(f"There is no job {job_id}.")
            if job.status != JobStatus.QUEUED:
                return QueueInfo(job.status, None, None)
            queued = (
                await conn.execute(
                    select(Job.id, Job.requester_id, RENDERS, Job.priority, User.last_served_at)
                    .join(User, User.id == Job.requester_id)
                    .where(Job.status == JobStatus.QUEUED)
                    .order_by(Job.created_at, Job.id)
                )
            ).all()
            running = await conn.scalar(
                select(func.coalesce(func.sum(RENDERS), 0)).where(Job.status == JobStatus.RUNNING)
            )
            rate = await self._images_per_second(conn)
        ahead, images_ahead = jobs_ahead(job_id, [tuple(row) for row in queued])
        eta = None if rate is None else (images_ahead + (running or 0) + job.renders) / rate
        return QueueInfo(JobStatus.QUEUED, ahead + 1, eta)

    async def depth(self) -> tuple[int, int]:
        """``(queued renders, running renders)``: what waits and what is being drawn."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Job.status, func.coalesce(func.sum(RENDERS), 0))
                .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                .group_by(Job.status)
            )
            totals = {status: int(total) for status, total in rows}
        return totals.get(JobStatus.QUEUED, 0), totals.get(JobStatus.RUNNING, 0)

    async def _images_per_second(
        self, conn: AsyncConnection, window: timedelta = timedelta(minutes=15)
    ) -> float | None:
        """Images rendered per second over recent jobs (candidates too); None without work."""
        rows = (
            await conn.execute(
                select(RENDERS, Job.started_at, Job.finished_at).where(
                    Job.status == JobStatus.DONE, Job.finished_at >= self._clock() - window
                )
            )
        ).all()
        if not rows:
            return None
        first = min(r.started_at or r.finished_at for r in rows)
        last = max(r.finished_at for r in rows)
        return sum(r.renders for r in rows) / max((last - first).total_seconds(), 1.0)
