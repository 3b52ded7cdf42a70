"""Who is served next: pure functions over queued jobs (no I/O).

The rule: the user served least recently goes first (round-robin across
users), each user's jobs in the order they were queued (FIFO), higher
priority (moderators) before all. A job's size is what it costs a worker: its renders
(``num_images * best_of``: a best-of-N request renders N candidates per image).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["fill_batch", "jobs_ahead"]


def fill_batch(candidates: Sequence[Any], *, first: Any, capacity: int) -> list[Any]:
    """Jobs to add to ``first``'s batch: one per user per round, users in the
    candidates' (fair) order, until ``capacity`` renders.

    A job too big for what is left is skipped; it leads a later batch.
    """
    per_user: dict[int, list[Any]] = defaultdict(list)
    for job in candidates:
        per_user[job.requester_id].append(job)
    users = list(per_user)
    # The lead's user already has a job in this round: they come last.
    if first.requester_id in per_user:
        users.remove(first.requester_id)
        users.append(first.requester_id)
    used = first.renders
    chosen: list[Any] = []
    while users and used < capacity:
        for user in list(users):
            queue = per_user[user]
            while queue and used + queue[0].renders > capacity:
                queue.pop(0)
            if not queue:
                users.remove(user)
                continue
            job = queue.pop(0)
            chosen.append(job)
            used += job.renders
    return chosen


def jobs_ahead(
    job_id: int, queued: Sequence[tuple[int, int, int, int, datetime | None]]
) -> tuple[int, int]:
    """``(jobs, images)`` served before ``job_id``.

    ``queued`` holds ``(id, requester_id, renders, priority, user_last_served_at)``
    for every queued job in creation order. A job ranked r-th among its user's
    jobs waits for r jobs of every other user of equal priority (r + 1 for users
    whose turn comes first) and for every job of higher priority.
    """
    by_user: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    served: dict[int, datetime | None] = {}
    for jid, user, images, priority, last_served in queued:
        by_user[user].append((jid, images, priority))
        served[user] = last_served
    target_user = next(user for jid, user, *_ in queued if jid == job_id)
    mine = by_user[target_user]
    rank = next(i for i, (jid, _, _) in enumerate(mine) if jid == job_id)
    target_priority = mine[rank][2]

    def turn(user: int) -> tuple[bool, datetime, int]:
        last = served[user]
        return (last is not None, (last or datetime.min).replace(tzinfo=None), user)

    jobs = images = 0
    for user, queue in by_user.items():
        if user == target_user:
            ahead = queue[:rank]
        else:
            higher = [q for q in queue if q[2] > target_priority]
            equal = [q for q in queue if q[2] == target_priority]
            ahead = higher + equal[: rank + (1 if turn(user) < turn(target_user) else 0)]
        jobs += len(ahead)
        images += sum(q[1] for q in ahead)
    return jobs, images
