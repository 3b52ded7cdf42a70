"""How a job's status changes on failure and on cancel: pure decisions (no I/O).

The queue (:mod:`dreamrate.generation.queue`) locks the job row, asks these functions, and
writes the answer.
"""

from __future__ import annotations

from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import JobStatus

__all__ = ["JobError", "status_after_cancel", "status_after_failure"]


class JobError(DreamrateError):
    """The job cannot be changed that way."""


def status_after_failure(
    *, cancel_requested: bool, retry: bool, attempts: int, max_attempts: int
) -> JobStatus:
    """A held job that failed: cancelled if its cancel was asked for, back in the queue
    when ``retry`` and attempts remain, else failed for good."""
    if cancel_requested:
        return JobStatus.CANCELLED
    if retry and attempts < max_attempts:
        return JobStatus.QUEUED
    return JobStatus.FAILED


def status_after_cancel(
    job_id: int, status: JobStatus, *, is_requester: bool, is_moderator: bool
) -> JobStatus:
    """What a cancel does: a queued job is cancelled at once, a running one keeps running
    until the worker's next step sees the request.

    Raises
    ------
    JobError
        when the caller is neither the requester nor a moderator, or the job has finished.
    """
    if not is_requester and not is_moderator:
        raise JobError("Only the requester or a moderator can cancel this job.")
    if status is JobStatus.QUEUED:
        return JobStatus.CANCELLED
    if status is JobStatus.RUNNING:
        return JobStatus.RUNNING
    raise JobError(f"Job {job_id} is already {status.value}.")
