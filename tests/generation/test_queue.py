"""The durable queue on SQLite and PostgreSQL: caps, fairness, batching, leases, completion, cancel."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from dreamrate.db.engine import create_engine
from dreamrate.db.models import Image, Job, JobStatus
from dreamrate.db.types import utcnow
from dreamrate.generation.queue import JobRepository, QueueFullError, StoredImage
from dreamrate.generation.transitions import JobError
from tests.generation.conftest import enqueue, make_request


def stored(n: int, seed: int = 1) -> list[StoredImage]:
    return [StoredImage(i, seed + i, 64, 64, f"{i:064x}", f"00/{i:064x}.png") for i in range(n)]


class Clock:
    """The queue's time, moved on by the test: a lease runs out when the test says so."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def test_caps_are_enforced_at_enqueue(engine, user_factory) -> None:  # type: ignore[no-untyped-def]
    repo = JobRepository(engine, per_user_cap=2, global_cap=3)
    alice, bob = await user_factory(1), await user_factory(2)
    await enqueue(repo, alice)
    await enqueue(repo, alice)
    with pytest.raises(
        QueueFullError, match=r"You already have 2 jobs waiting or running \(the limit is 2\)"
    ):
        await enqueue(repo, alice)
    await enqueue(repo, bob)
    carol = await user_factory(3)
    with pytest.raises(QueueFullError, match=r"The queue is full \(3 jobs waiting\)"):
        await enqueue(repo, carol)
    # Refused requests left nothing behind.
    async with engine.connect() as conn:
        assert (await conn.scalar(select(func.count()).select_from(Job))) == 3


async def test_round_robin_across_users_fifo_within(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    a, b, c = await user_factory(1), await user_factory(2), await user_factory(3)
    a_jobs = [await enqueue(repo, a, f"a{i}") for i in range(4)]
    b_job = await enqueue(repo, b, "b0")
    c_jobs = [await enqueue(repo, c, f"c{i}") for i in range(2)]
    served = []
    while batch := await repo.claim_batch("w", max_images=1):
        served += [job.prompt for job in batch]
    assert served == ["a0", "b0", "c0", "a1", "c1", "a2", "a3"]
    # Every queued job was served exactly once, and none is left queued.
    queued = [*a_jobs, b_job, *c_jobs]
    for job in queued:
        record = await repo.get(job.id)
        assert record is not None and record.status is JobStatus.RUNNING


async def test_batches_take_one_job_per_user_per_round(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = await user_factory(1), await user_factory(2)
    for i in range(5):
        await enqueue(repo, a, f"a{i}")
    await enqueue(repo, b, "b0")
    first = await repo.claim_batch("w", max_images=4)
    # B is in the very first batch although A queued 5 jobs before.
    assert [j.prompt for j in first] == ["a0", "b0", "a1", "a2"]


async def test_only_compatible_jobs_share_a_batch(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    a, b, c, d = [await user_factory(i) for i in range(1, 5)]
    await enqueue(repo, a, "lead")
    await enqueue(repo, b, "bigger", width=128)
    await enqueue(repo, c, "other-model", model="other")
    await enqueue(repo, d, "more-steps", steps=3)
    await enqueue(repo, a, "same")
    batch = await repo.claim_batch("w", max_images=4)
    assert [j.prompt for j in batch] == ["lead", "same"]


async def test_images_per_batch_are_bounded(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    a, b, c = await user_factory(1), await user_factory(2), await user_factory(3)
    await enqueue(repo, a, "a", num_images=3)
    await enqueue(repo, b, "b", num_images=2)
    await enqueue(repo, c, "c", num_images=1)
    batch = await repo.claim_batch("w", max_images=4)
    assert [j.prompt for j in batch] == ["a", "c"]  # b does not fit; it leads the next batch
    assert [j.prompt for j in await repo.claim_batch("w", max_images=4)] == ["b"]


async def test_moderator_priority_goes_first(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    a, mod = await user_factory(1), await user_factory(2)
    await enqueue(repo, a, "a0")
    await repo.enqueue(make_request("mod"), requester_id=mod, priority=10)
    assert [j.prompt for j in await repo.claim_batch("w", max_images=1)] == ["mod"]


async def test_claims_are_atomic_under_concurrency(database_url: str, repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    users = [await user_factory(i) for i in range(1, 11)]
    for i in range(60):
        await enqueue(repo, users[i % 10], f"j{i}", num_images=1 + i % 2)
    engines = [create_engine(database_url) for _ in range(4)]
    claims: Counter[int] = Counter()

    async def worker(n: int) -> None:
        own = JobRepository(engines[n])
        while batch := await own.claim_batch(f"w{n}", max_images=4):
            for job in batch:
                claims[job.id] += 1
                assert await own.complete(f"w{n}", job.id, stored(job.num_images))

    try:
        await asyncio.gather(*(worker(n) for n in range(4)))
    finally:
        for e in engines:
            await e.dispose()
    assert len(claims) == 60 and set(claims.values()) == {1}
    async with repo.engine.connect() as conn:
        assert (
            await conn.scalar(
                select(func.count()).select_from(Job).where(Job.status == JobStatus.DONE)
            )
        ) == 60
        assert (await conn.scalar(select(func.count()).select_from(Image))) == 90


async def test_expired_lease_is_retried_then_failed(engine, user_factory) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    repo = JobRepository(engine, max_attempts=2, lease_seconds=60, clock=clock)
    job = await enqueue(repo, await user_factory(1))
    first = await repo.claim_batch("lost-1", max_images=1)
    assert first[0].attempts == 1
    clock.advance(59)
    assert await repo.claim_batch("lost-2", max_images=1) == []  # still lost-1's
    clock.advance(6)  # past the lease, and past the next reap (at most 5 s after the last)
    second = await repo.claim_batch("lost-2", max_images=1)
    assert (
        [j.id for j in second] == [job.id]
        and second[0].attempts == 2
        and second[0].lease_owner == "lost-2"
    )
    clock.advance(61)
    assert await repo.claim_batch("w3", max_images=1) == []
    final = await repo.get(job.id)
    assert final is not None and final.status is JobStatus.FAILED
    assert final.error == "a worker stopped responding 2 times while running this job"


async def test_heartbeat_keeps_the_lease(engine, user_factory) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    repo = JobRepository(engine, lease_seconds=60, clock=clock)
    job = await enqueue(repo, await user_factory(1))
    await repo.claim_batch("w1", max_images=1)
    for _ in range(4):
        clock.advance(45)  # each beat inside the lease the one before it set
        beat = await repo.heartbeat("w1", [job.id], progress=0.5)
        assert beat.owned == {job.id}
    # Three minutes after the claim: only the heartbeats kept the job w1's.
    assert await repo.claim_batch("w2", max_images=1) == []
    current = await repo.get(job.id)
    assert current is not None and current.progress == 0.5 and current.lease_owner == "w1"
    clock.advance(61)  # a lease without a beat: the job goes to another worker
    taken = await repo.claim_batch("w2", max_images=1)
    assert [(j.id, j.attempts) for j in taken] == [(job.id, 2)]
    assert (await repo.heartbeat("w1", [job.id])).owned == frozenset()


async def test_late_worker_never_duplicates_images(engine, user_factory) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    repo = JobRepository(engine, lease_seconds=60, clock=clock)
    job = await enqueue(repo, await user_factory(1), num_images=2)
    await repo.claim_batch("slow", max_images=4)
    clock.advance(61)
    await repo.claim_batch("fast", max_images=4)
    assert (await repo.heartbeat("slow", [job.id])).owned == frozenset()
    assert await repo.complete("fast", job.id, stored(2))
    assert not await repo.complete("slow", job.id, stored(2, seed=99))
    assert not await repo.complete("fast", job.id, stored(2))  # twice is a no-op too
    assert [image.seed for image in await repo.images(job.id)] == [1, 2]


async def test_fail_retries_then_gives_up(engine, user_factory) -> None:  # type: ignore[no-untyped-def]
    repo = JobRepository(engine, max_attempts=2)
    job = await enqueue(repo, await user_factory(1))
    await repo.claim_batch("w", max_images=1)
    assert await repo.fail("w", job.id, "disk full", retry=True) is JobStatus.QUEUED
    await repo.claim_batch("w", max_images=1)
    assert await repo.fail("w", job.id, "disk full", retry=True) is JobStatus.FAILED
    final = await repo.get(job.id)
    assert final is not None and final.error == "disk full" and final.attempts == 2
    assert await repo.fail("other", job.id, "x", retry=True) is None


async def test_cancel(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    owner, stranger, mod = await user_factory(1), await user_factory(2), await user_factory(3)
    queued = await enqueue(repo, owner, "queued")
    with pytest.raises(JobError, match="Only the requester or a moderator"):
        await repo.cancel(queued.id, by_user_id=stranger)
    assert await repo.cancel(queued.id, by_user_id=owner) is JobStatus.CANCELLED
    with pytest.raises(JobError, match="already cancelled"):
        await repo.cancel(queued.id, by_user_id=owner)
    with pytest.raises(JobError, match="There is no job 9999"):
        await repo.cancel(9999, by_user_id=owner)

    running = await enqueue(repo, owner, "running")
    assert [j.id for j in await repo.claim_batch("w", max_images=1)] == [running.id]
    assert await repo.cancel(running.id, by_user_id=mod, is_moderator=True) is JobStatus.RUNNING
    assert (await repo.heartbeat("w", [running.id])).cancel == {running.id}
    assert not await repo.complete("w", running.id, stored(1))
    final = await repo.get(running.id)
    assert final is not None and final.status is JobStatus.CANCELLED
    assert await repo.images(running.id) == []


async def test_release_returns_jobs_without_counting_the_attempt(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    job = await enqueue(repo, await user_factory(1))
    await repo.claim_batch("w", max_images=1)
    assert await repo.release("w", [job.id]) == 1
    back = await repo.get(job.id)
    assert back is not None and back.status is JobStatus.QUEUED and back.attempts == 0


async def test_queue_position_and_eta(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = await user_factory(1), await user_factory(2)
    a_jobs = [await enqueue(repo, a, f"a{i}") for i in range(3)]
    b_job = await enqueue(repo, b, "b0")
    info = await repo.queue_info(b_job.id)
    assert info.position == 2 and info.eta_seconds is None  # after a0, before a1
    assert (await repo.queue_info(a_jobs[2].id)).position == 4
    # Some throughput: finish one job, then an ETA exists.
    batch = await repo.claim_batch("w", max_images=1)
    async with repo.engine.begin() as conn:
        await conn.execute(update(Job).where(Job.id == batch[0].id).values(started_at=func.now()))
    assert await repo.complete("w", batch[0].id, stored(1))
    info = await repo.queue_info(b_job.id)
    assert info.position == 1 and info.eta_seconds is not None and info.eta_seconds > 0
    assert (await repo.queue_info(batch[0].id)).position is None


async def test_enqueue_is_idempotent_by_interaction_id(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    """A retry after a commit whose reply was lost returns the job already queued."""
    user = await user_factory(1)
    first = await repo.enqueue(make_request("once"), requester_id=user, interaction_id=555)
    again = await repo.enqueue(make_request("once"), requester_id=user, interaction_id=555)
    other = await repo.enqueue(make_request("twice"), requester_id=user, interaction_id=556)
    assert again.id == first.id and other.id != first.id
    async with repo.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Job)) == 2


async def test_interaction_tokens_are_dropped_once_delivered_or_expired(repo, user_factory) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from dreamrate.community.posts import PostRepository as DeliveryRepository
    from dreamrate.db.types import utcnow

    user = await user_factory(1)
    deliveries = DeliveryRepository(repo.engine)
    soon = utcnow() + timedelta(minutes=15)
    delivered = await repo.enqueue(
        make_request("a"),
        requester_id=user,
        interaction_token="tok-a",
        interaction_token_expires_at=soon,
    )
    expired = await repo.enqueue(
        make_request("b"),
        requester_id=user,
        interaction_token="tok-b",
        interaction_token_expires_at=utcnow() - timedelta(seconds=1),
    )
    live = await repo.enqueue(
        make_request("c"),
        requester_id=user,
        interaction_token="tok-c",
        interaction_token_expires_at=soon,
    )
    await deliveries.mark_delivered(delivered.id)
    assert await deliveries.forget_expired_tokens() == 1
    async with repo.engine.connect() as conn:
        stored = dict((await conn.execute(select(Job.id, Job.interaction_token))).all())
    assert stored == {delivered.id: None, expired.id: None, live.id: "tok-c"}
