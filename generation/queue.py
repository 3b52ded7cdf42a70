"""The durable job queue: every state change of a generation job, in one repository.

Claims are atomic on both backends. PostgreSQL: ``SELECT ... FOR UPDATE SKIP
LOCKED``, so any number of workers on any number of hosts share one queue.
SQLite: the claim runs inside ``BEGIN IMMEDIATE`` (one writer at a time) and
marks its rows with ``UPDATE ... RETURNING``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.models import Image, Job, JobStatus, User
from db.types import utcnow
from dreamrate.errors import DreamrateError
from generation.request import GenerationRequest

__all__ = [
    "BatchKey",
    "HeartbeatResult",
    "JobError",
    "JobRecord",
    "JobRepository",
    "QueueFullError",
    "QueueInfo",
    "StoredImage",
]

logger = logging.getLogger(__name__)

BatchKey = tuple[str, int, int, int, float, str]
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobError(DreamrateError):
    """The job cannot be changed that way."""


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
    def from_row(cls, job: Job) -> JobRecord:
        return cls(**{name: getattr(job, name) for name in cls.__slots__})  # type: ignore[attr-defined]

    @property
    def seeds(self) -> list[int]:
        """Image i of a job uses seed + i (wrapping at 2**32), as Automatic1111 and others do."""
        return [(self.seed + i) % 2**32 for i in range(self.num_images)]

    @property
    def batch_key(self) -> BatchKey:
        """Jobs with equal keys can share one pipeline call."""
        return (self.model, self.width, self.height, self.steps, self.guidance, self.scheduler)


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
        Most active (queued or running) jobs per user and in total, enforced at enqueue.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_attempts: int = 3,
        lease_seconds: float = 120.0,
        per_user_cap: int = 2,
        global_cap: int = 200,
    ) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        self.lease = timedelta(seconds=lease_seconds)
        self.per_user_cap = per_user_cap
        self.global_cap = global_cap
        self._is_pg = engine.dialect.name == "postgresql"
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite: take the write lock at BEGIN, so check-then-write is atomic.
        self._write_sessions = async_sessionmaker(
            engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
        )

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        async with self._write_sessions() as session, session.begin():
            yield session

    def _locked(self, query: Select, *, skip_locked: bool = False) -> Select:  # type: ignore[type-arg]
        return query.with_for_update(of=Job, skip_locked=skip_locked) if self._is_pg else query

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
        enforce_caps: bool = True,
    ) -> JobRecord:
        """Queue a validated request.

        Raises
        ------
        QueueFullError
            when the requester already has ``per_user_cap`` active jobs or the
            queue holds ``global_cap``.
        """
        async with self._write() as session:
            if enforce_caps:
                if self._is_pg:
                    # Serialise enqueues of one user so two parallel /dream cannot both pass the cap.
                    await session.execute(
                        select(User.id).where(User.id == requester_id).with_for_update()
                    )
                mine = await session.scalar(
                    select(func.count()).where(
                        Job.requester_id == requester_id, Job.status.in_(ACTIVE)
                    )
                )
                if (mine or 0) >= self.per_user_cap:
                    raise QueueFullError(
                        f"You already have {mine} jobs waiting or running (the limit is {self.per_user_cap}); "
                        "wait for one to finish."
                    )
                total = await session.scalar(
                    select(func.count()).where(Job.status == JobStatus.QUEUED)
                )
                if (total or 0) >= self.global_cap:
                    raise QueueFullError(
                        f"The queue is full ({total} jobs waiting); try again in a few minutes."
                    )
            job = Job(
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
                seed=request.seed,
                params={"notes": list(request.notes)},
                priority=priority,
                interaction_token=interaction_token,
                interaction_token_expires_at=interaction_token_expires_at,
            )
            session.add(job)
            await session.flush()
            return JobRecord.from_row(job)

    # -- claim ------------------------------------------------------------------------

    async def claim_batch(self, worker_id: str, *, max_images: int) -> list[JobRecord]:
        """Claim the next batch: the least recently served user's oldest job, plus
        compatible jobs from other users (round-robin) up to ``max_images`` images.

        A job larger than ``max_images`` is claimed alone. Expired leases are
        reaped first. Returns ``[]`` when nothing is queued.
        """
        now = utcnow()
        async with self._write() as session:
            await self._reap(session, now)
            order = (
                Job.priority.desc(),
                User.last_served_at.asc().nulls_first(),
                Job.created_at.asc(),
                Job.id.asc(),
            )
            lead_query = (
                select(Job)
                .join(User, User.id == Job.requester_id)
                .where(Job.status == JobStatus.QUEUED)
            )
            lead = (
                await session.execute(
                    self._locked(lead_query.order_by(*order).limit(1), skip_locked=True)
                )
            ).scalar_one_or_none()
            if lead is None:
                return []
            capacity = max(max_images, lead.num_images)
            chosen = [lead]
            if lead.num_images < capacity:
                candidates_query = lead_query.where(
                    Job.id != lead.id,
                    Job.model == lead.model,
                    Job.width == lead.width,
                    Job.height == lead.height,
                    Job.steps == lead.steps,
                    Job.guidance == lead.guidance,
                    Job.scheduler == lead.scheduler,
                    Job.num_images <= capacity - lead.num_images,
                )
                candidates = (
                    await session.execute(
                        self._locked(
                            candidates_query.order_by(*order).limit(capacity * 4), skip_locked=True
                        )
                    )
                ).scalars()
                chosen += _round_robin(list(candidates), first=lead, capacity=capacity)
            ids = [job.id for job in chosen]
            claimed = (
                await session.execute(
                    update(Job)
                    .where(Job.id.in_(ids), Job.status == JobStatus.QUEUED)
                    .values(
                        status=JobStatus.RUNNING,
                        lease_owner=worker_id,
                        lease_expires_at=now + self.lease,
                        heartbeat_at=now,
                        attempts=Job.attempts + 1,
                        started_at=func.coalesce(Job.started_at, now),
                        progress=0.0,
                        updated_at=now,
                    )
                    .returning(Job.id)
                    .execution_options(synchronize_session=False)
                )
            ).scalars()
            claimed_ids = set(claimed)
            await session.execute(
                update(User)
                .where(User.id.in_({job.requester_id for job in chosen if job.id in claimed_ids}))
                .values(last_served_at=now)
                .execution_options(synchronize_session=False)
            )
            rows = (
                await session.execute(
                    select(Job)
                    .where(Job.id.in_(claimed_ids))
                    .execution_options(populate_existing=True)
                )
            ).scalars()
            by_id = {job.id: JobRecord.from_row(job) for job in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def _reap(self, session: AsyncSession, now: datetime) -> None:
        expired = (Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
        await session.execute(
            update(Job)
            .where(*expired, Job.cancel_requested.is_(True))
            .values(
                status=JobStatus.CANCELLED, finished_at=now, lease_owner=None, lease_expires_at=None
            )
            .execution_options(synchronize_session=False)
        )
        failed = (
            (
                await session.execute(
                    update(Job)
                    .where(*expired, Job.attempts >= self.max_attempts)
                    .values(
                        status=JobStatus.FAILED,
                        error=f"a worker stopped responding {self.max_attempts} times while running this job",
                        finished_at=now,
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                    .returning(Job.id)
                    .execution_options(synchronize_session=False)
                )
            )
            .scalars()
            .all()
        )
        requeued = (
            (
                await session.execute(
                    update(Job)
                    .where(*expired)
                    .values(
                        status=JobStatus.QUEUED,
                        lease_owner=None,
                        lease_expires_at=None,
                        progress=0.0,
                        updated_at=now,
                    )
                    .returning(Job.id)
                    .execution_options(synchronize_session=False)
                )
            )
            .scalars()
            .all()
        )
        if failed or requeued:
            logger.warning(
                "reaped expired leases: %d job(s) requeued %s, %d failed %s",
                len(requeued),
                list(requeued),
                len(failed),
                list(failed),
            )

    async def reap_expired(self) -> None:
        """Requeue (or fail, after ``max_attempts``) jobs whose lease ran out."""
        async with self._write() as session:
            await self._reap(session, utcnow())

    # -- while running ----------------------------------------------------------------

    async def heartbeat(
        self, worker_id: str, job_ids: Iterable[int], *, progress: float | None = None
    ) -> HeartbeatResult:
        """Extend the lease of the jobs this worker still holds (optionally recording progress)."""
        ids = list(job_ids)
        if not ids:
            return HeartbeatResult(frozenset(), frozenset())
        now = utcnow()
        values: dict[str, object] = {"lease_expires_at": now + self.lease, "heartbeat_at": now}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, progress))
        async with self._write() as session:
            rows = (
                await session.execute(
                    update(Job)
                    .where(
                        Job.id.in_(ids),
                        Job.lease_owner == worker_id,
                        Job.status == JobStatus.RUNNING,
                    )
                    .values(**values)
                    .returning(Job.id, Job.cancel_requested)
                    .execution_options(synchronize_session=False)
                )
            ).all()
        return HeartbeatResult(
            owned=frozenset(r[0] for r in rows), cancel=frozenset(r[0] for r in rows if r[1])
        )

    # -- finishing --------------------------------------------------------------------

    async def _owned(self, session: AsyncSession, worker_id: str, job_id: int) -> Job | None:
        job = (
            await session.execute(
                self._locked(select(Job).where(Job.id == job_id)).execution_options(
                    populate_existing=True
                )
            )
        ).scalar_one_or_none()
        if job is None or job.status != JobStatus.RUNNING or job.lease_owner != worker_id:
            return None
        return job

    async def complete(self, worker_id: str, job_id: int, images: Sequence[StoredImage]) -> bool:
        """Record the job's images and mark it done; idempotent.

        Returns False, recording nothing, when this worker no longer holds the
        job (its lease expired and another worker took it, or it was finished
        already), so a late worker never duplicates images. A job whose
        cancellation was requested ends as cancelled instead.
        """
        now = utcnow()
        async with self._write() as session:
            job = await self._owned(session, worker_id, job_id)
            if job is None:
                logger.warning(
                    "job %s: not held by %s any more; its result is dropped", job_id, worker_id
                )
                return False
            job.lease_owner, job.lease_expires_at, job.finished_at = None, None, now
            if job.cancel_requested:
                job.status = JobStatus.CANCELLED
                return False
            for image in images:
                session.add(
                    Image(
                        job_id=job_id,
                        index=image.index,
                        seed=image.seed,
                        width=image.width,
                        height=image.height,
                        sha256=image.sha256,
                        path=image.path,
                        flagged=image.flagged,
                    )
                )
            job.status, job.progress, job.error = JobStatus.DONE, 1.0, None
        return True

    async def fail(
        self, worker_id: str, job_id: int, error: str, *, retry: bool
    ) -> JobStatus | None:
        """Give a held job back after an error: requeued when ``retry`` and attempts
        remain, else failed with ``error`` stored. None if the job is not held."""
        now = utcnow()
        async with self._write() as session:
            job = await self._owned(session, worker_id, job_id)
            if job is None:
                return None
            job.error = error[:2000]
            job.lease_owner, job.lease_expires_at, job.progress = None, None, 0.0
            if job.cancel_requested:
                job.status, job.finished_at = JobStatus.CANCELLED, now
            elif retry and job.attempts < self.max_attempts:
                job.status = JobStatus.QUEUED
            else:
                job.status, job.finished_at = JobStatus.FAILED, now
            return job.status

    async def release(self, worker_id: str, job_ids: Iterable[int]) -> int:
        """Hand held jobs back to the queue untouched (graceful shutdown); the attempt is not counted."""
        async with self._write() as session:
            result = await session.execute(
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
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            return result.rowcount or 0  # type: ignore[attr-defined]

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
        async with self._write() as session:
            job = (
                await session.execute(self._locked(select(Job).where(Job.id == job_id)))
            ).scalar_one_or_none()
            if job is None:
                raise JobError(f"There is no job {job_id}.")
            if job.requester_id != by_user_id and not is_moderator:
                raise JobError("Only the requester or a moderator can cancel this job.")
            if job.status == JobStatus.QUEUED:
                job.status, job.finished_at, job.cancel_requested = (
                    JobStatus.CANCELLED,
                    utcnow(),
                    True,
                )
            elif job.status == JobStatus.RUNNING:
                job.cancel_requested = True
            else:
                raise JobError(f"Job {job_id} is already {job.status.value}.")
            return job.status

    # -- reading ----------------------------------------------------------------------

    async def get(self, job_id: int) -> JobRecord | None:
        async with self._read() as session:
            job = await session.get(Job, job_id)
            return JobRecord.from_row(job) if job is not None else None

    async def images(self, job_id: int) -> list[Image]:
        async with self._read() as session:
            return list(
                (
                    await session.execute(
                        select(Image).where(Image.job_id == job_id).order_by(Image.index)
                    )
                ).scalars()
            )

    async def queue_info(self, job_id: int) -> QueueInfo:
        """Position in the queue under round-robin service, and an ETA from recent throughput."""
        async with self._read() as session:
            job = await session.get(Job, job_id)
            if job is None:
                raise JobError(f"There is no job {job_id}.")
            if job.status != JobStatus.QUEUED:
                return QueueInfo(job.status, None, None)
            rows = (
                await session.execute(
                    select(
                        Job.id, Job.requester_id, Job.num_images, Job.priority, User.last_served_at
                    )
                    .join(User, User.id == Job.requester_id)
                    .where(Job.status == JobStatus.QUEUED)
                    .order_by(Job.created_at, Job.id)
                )
            ).all()
            running = await session.scalar(
                select(func.coalesce(func.sum(Job.num_images), 0)).where(
                    Job.status == JobStatus.RUNNING
                )
            )
            rate = await self._images_per_second(session)
        ahead, images_ahead = _ahead_of(job_id, rows)
        eta = None if rate is None else (images_ahead + (running or 0) + job.num_images) / rate
        return QueueInfo(JobStatus.QUEUED, ahead + 1, eta)

    async def _images_per_second(
        self, session: AsyncSession, window: timedelta = timedelta(minutes=15)
    ) -> float | None:
        since = utcnow() - window
        row = (
            await session.execute(
                select(
                    func.sum(Job.num_images), func.min(Job.started_at), func.max(Job.finished_at)
                ).where(Job.status == JobStatus.DONE, Job.finished_at >= since)
            )
        ).one()
        images, first, last = row
        if not images or first is None or last is None:
            return None
        first = first if isinstance(first, datetime) else datetime.fromisoformat(str(first))
        last = last if isinstance(last, datetime) else datetime.fromisoformat(str(last))
        seconds = max((last.replace(tzinfo=None) - first.replace(tzinfo=None)).total_seconds(), 1.0)
        return float(images) / seconds


def _round_robin(candidates: list[Job], *, first: Job, capacity: int) -> list[Job]:
    """Fill a batch taking one job per user per round, users in the candidates' fair order."""
    per_user: dict[int, list[Job]] = defaultdict(list)
    for job in candidates:
        per_user[job.requester_id].append(job)
    users = list(per_user)
    # The lead's user already has a job in this round: they come last.
    if first.requester_id in per_user:
        users.remove(first.requester_id)
        users.append(first.requester_id)
    used = first.num_images
    chosen: list[Job] = []
    while users and used < capacity:
        for user in list(users):
            queue = per_user[user]
            while queue and used + queue[0].num_images > capacity:
                queue.pop(0)  # too big for what is left; it leads a later batch
            if not queue:
                users.remove(user)
                continue
            job = queue.pop(0)
            chosen.append(job)
            used += job.num_images
    return chosen


def _ahead_of(
    job_id: int, rows: Sequence[tuple[int, int, int, int, datetime | None]]
) -> tuple[int, int]:
    """Jobs and images served before ``job_id`` under priority + round-robin, FIFO per user."""
    by_user: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    served: dict[int, datetime | None] = {}
    for jid, user, images, priority, last_served in rows:
        by_user[user].append((jid, images, priority))
        served[user] = last_served
    target_user = next(user for jid, user, *_ in rows if jid == job_id)
    mine = by_user[target_user]
    rank = next(i for i, (jid, _, _) in enumerate(mine) if jid == job_id)
    target_priority = mine[rank][2]
    never = datetime.min
    mine_key = served[target_user] or never
    jobs = images = 0
    for user, queue in by_user.items():
        if user == target_user:
            ahead = queue[:rank]
        else:
            higher = [q for q in queue if q[2] > target_priority]
            equal = [q for q in queue if q[2] == target_priority]
            other_key = served[user] or never
            turns = rank + (
                1
                if (other_key.replace(tzinfo=None), user)
                < (mine_key.replace(tzinfo=None), target_user)
                else 0
            )
            ahead = higher + equal[:turns]
        jobs += len(ahead)
        images += sum(q[1] for q in ahead)
    return jobs, images
