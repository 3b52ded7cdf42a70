"""Who is served next and how a job's status changes: the pure decisions, tested directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from dreamrate.db.models import JobStatus
from dreamrate.generation.scheduling import fill_batch, jobs_ahead
from dreamrate.generation.transitions import JobError, status_after_cancel, status_after_failure


@dataclass(frozen=True)
class J:
    id: int
    requester_id: int
    num_images: int = 1
    best_of: int = 1

    @property
    def renders(self) -> int:
        return self.num_images * self.best_of


def test_fill_batch_takes_one_job_per_user_per_round() -> None:
    lead = J(1, requester_id=10)
    candidates = [J(2, 10), J(3, 10), J(4, 20), J(5, 30), J(6, 20)]
    # The lead's user already has this round's job: they come last in each round.
    assert [j.id for j in fill_batch(candidates, first=lead, capacity=5)] == [4, 5, 2, 6]


def test_fill_batch_skips_a_job_too_big_for_what_is_left_and_never_exceeds_capacity() -> None:
    lead = J(1, 10, num_images=2)
    candidates = [J(2, 20, num_images=3), J(3, 30, num_images=1), J(4, 20, num_images=1)]
    chosen = fill_batch(candidates, first=lead, capacity=4)
    # Job 2 would make 5 images: it waits to lead a later batch; user 20's next job fits,
    # and users keep the candidates' (fair) order.
    assert [j.id for j in chosen] == [4, 3]
    assert lead.num_images + sum(j.num_images for j in chosen) <= 4
    assert fill_batch([], first=lead, capacity=4) == []


def test_fill_batch_counts_every_candidate_a_best_of_job_renders() -> None:
    # One image at best of 3 costs a worker three renders: it does not fit beside 2 others.
    lead = J(1, 10, num_images=2)
    candidates = [J(2, 20, num_images=1, best_of=3), J(3, 30, num_images=2)]
    chosen = fill_batch(candidates, first=lead, capacity=4)
    assert [j.id for j in chosen] == [3]
    assert [j.id for j in fill_batch(candidates, first=lead, capacity=5)] == [2]


def test_jobs_ahead_counts_round_robin_turns_and_priority() -> None:
    earlier = datetime(2026, 1, 1, tzinfo=UTC)
    later = earlier + timedelta(hours=1)
    queued = [
        (1, 10, 2, 0, later),  # user 10 was served most recently
        (2, 10, 1, 0, later),
        (3, 20, 4, 0, earlier),
        (4, 20, 1, 0, earlier),
        (5, 30, 1, 0, None),  # never served: goes first
        (6, 40, 3, 1, later),  # a moderator's job: before everyone of priority 0
    ]
    # Job 2 is user 10's second: it waits for job 1, for two jobs of each user whose turn
    # comes first (user 20 has two, user 30 one) and for the higher-priority job.
    assert jobs_ahead(2, queued) == (5, 2 + (4 + 1) + 1 + 3)
    assert jobs_ahead(5, queued) == (1, 3)  # only the moderator's job is ahead of the unserved
    assert jobs_ahead(6, queued) == (0, 0)


@pytest.mark.parametrize(
    ("cancel_requested", "retry", "attempts", "expected"),
    [
        (True, True, 1, JobStatus.CANCELLED),
        (False, True, 1, JobStatus.QUEUED),
        (False, True, 3, JobStatus.FAILED),  # out of attempts
        (False, False, 1, JobStatus.FAILED),
    ],
)
def test_status_after_failure(
    cancel_requested: bool, retry: bool, attempts: int, expected: JobStatus
) -> None:
    status = status_after_failure(
        cancel_requested=cancel_requested, retry=retry, attempts=attempts, max_attempts=3
    )
    assert status is expected


def test_status_after_cancel() -> None:
    assert (
        status_after_cancel(1, JobStatus.QUEUED, is_requester=True, is_moderator=False)
        is JobStatus.CANCELLED
    )
    assert (
        status_after_cancel(1, JobStatus.RUNNING, is_requester=False, is_moderator=True)
        is JobStatus.RUNNING
    )
    with pytest.raises(JobError, match="Only the requester or a moderator"):
        status_after_cancel(1, JobStatus.QUEUED, is_requester=False, is_moderator=False)
    for finished in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED):
        with pytest.raises(JobError, match=f"Job 1 is already {finished.value}"):
            status_after_cancel(1, finished, is_requester=True, is_moderator=False)
