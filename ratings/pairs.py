"""Which two images to ask a member to compare next.

A choice teaches most about a pair whose order is unsure: close predicted scores and cross-
validation heads that disagree (scored by :mod:`dreamrate.aesthetic.select` once a
predictor is active). Pairs are mostly two images of one prompt, as a member would compare
them; a member never sees a pair they already judged; among equals the images compared
least come first, so choices spread over the pool. Without a predictor: random pairs within
a prompt, fewest comparisons first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import func, select, union_all
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Choice, ComparisonPost, Image, Job, User
from dreamrate.ratings.policy import counted_member
from dreamrate.ratings.schema import prompt_group
from dreamrate.ratings.selection import shown_for_rating

__all__ = ["CANDIDATES", "PairPool", "choose_pairs", "pair_pool", "recent_pairs"]

#: Most images considered per request (those compared least).
CANDIDATES = 2000
#: Most images of one prompt paired with each other (the compared least).
PER_PROMPT = 40


@dataclass(frozen=True)
class PairPool:
    """Candidate images of one guild and what the member already judged."""

    image_ids: np.ndarray  #: int64
    groups: list[str]  #: the prompt group of each
    comparisons: np.ndarray  #: how many counted choices each image is in
    judged: frozenset[frozenset[int]]  #: pairs this member already judged (either order)


async def recent_pairs(
    engine: AsyncEngine, channel_id: int, since: datetime
) -> set[frozenset[int]]:
    """The pairs compared in ``channel_id`` since ``since`` (those posts are still open)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ComparisonPost.image_a_id, ComparisonPost.image_b_id).where(
                ComparisonPost.channel_id == channel_id, ComparisonPost.posted_at >= since
            )
        )
        return {frozenset((int(a), int(b))) for a, b in rows}


async def pair_pool(engine: AsyncEngine, guild_id: int, member_discord_id: int | None) -> PairPool:
    """The images ``guild_id`` may show again, compared least first, and the pairs
    ``member_discord_id`` (None: nobody in particular, the feed) has judged."""
    sides = union_all(
        select(Choice.image_a_id.label("image_id"))
        .join(User, User.id == Choice.user_id)
        .where(counted_member()),
        select(Choice.image_b_id.label("image_id"))
        .join(User, User.id == Choice.user_id)
        .where(counted_member()),
    ).subquery()
    counts = select(sides.c.image_id, func.count().label("n")).group_by(sides.c.image_id).subquery()
    query = (
        select(Image.id, Job.prompt, func.coalesce(counts.c.n, 0).label("n"))
        .join(Job, Job.id == Image.job_id)
        .outerjoin(counts, counts.c.image_id == Image.id)
        .where(shown_for_rating(guild_id))
        .order_by(func.coalesce(counts.c.n, 0), Image.id.desc())
        .limit(CANDIDATES)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        judged: set[frozenset[int]] = set()
        if member_discord_id is not None:
            pairs = await conn.execute(
                select(Choice.image_a_id, Choice.image_b_id)
                .join(User, User.id == Choice.user_id)
                .where(User.discord_id == member_discord_id)
            )
            judged = {frozenset((int(a), int(b))) for a, b in pairs}
    return PairPool(
        image_ids=np.array([row.id for row in rows], dtype=np.int64),
        groups=[prompt_group(row.prompt) for row in rows],
        comparisons=np.array([row.n for row in rows], dtype=np.int64),
        judged=frozenset(judged),
    )


def choose_pairs(
    pool: PairPool,
    count: int,
    *,
    scores: np.ndarray | None = None,
    heads: np.ndarray | None = None,
    seed: int | None = None,
) -> list[tuple[int, int]]:
    """Up to ``count`` pairs ``(left, right)`` of image ids, best first (pure).

    ``scores`` (one per candidate) and ``heads`` (candidates x CV heads) are the predictor's;
    without them pairs are random within a prompt. Each image appears at most once in a
    batch; which side an image takes is random (members favour one side, the order must not).
    """
    rng = np.random.default_rng(seed)
    n = len(pool.image_ids)
    if n < 2 or count <= 0:
        return []
    by_group: dict[str, list[int]] = {}
    for k, group in enumerate(pool.groups):
        members = by_group.setdefault(group, [])
        if len(members) < PER_PROMPT:
            members.append(k)
    candidates: list[tuple[float, int, int]] = []  # (priority, i, j): higher first
    noise = rng.random(n)

    def value(i: int, j: int, same_prompt: bool) -> float:
        few = 1.0 / np.sqrt(1.0 + pool.comparisons[i] + pool.comparisons[j])
        if scores is None:
            sure = 1.0
        else:
            gap = abs(float(scores[i] - scores[j]))
            spread = 1e-6
            if heads is not None and heads.shape[1] > 1:
                spread += float(np.std(heads[i] - heads[j]))
                # Heads that disagree on which image is better: as unsure as a pair gets.
                if len({bool(d > 0) for d in heads[i] - heads[j]}) > 1:
                    gap = 0.0
            sure = 1.0 / (1.0 + gap / (spread + 0.05 * float(np.std(scores)) + 1e-9))
        return few * sure * (1.0 if same_prompt else 0.25) * (1.0 + 0.01 * (noise[i] + noise[j]))

    for members in by_group.values():
        for x, i in enumerate(members):
            for j in members[x + 1 :]:
                if frozenset((int(pool.image_ids[i]), int(pool.image_ids[j]))) not in pool.judged:
                    candidates.append((value(i, j, True), i, j))
    if len(candidates) < count:
        # Not enough pairs within prompts: pair neighbours of the compared-least order.
        order = list(range(n))
        rng.shuffle(order)
        for x in range(0, len(order) - 1):
            i, j = order[x], order[x + 1]
            if pool.groups[i] != pool.groups[j] and (
                frozenset((int(pool.image_ids[i]), int(pool.image_ids[j]))) not in pool.judged
            ):
                candidates.append((value(i, j, False), i, j))
    candidates.sort(key=lambda c: -c[0])
    used: Counter[int] = Counter()
    chosen: list[tuple[int, int]] = []
    for _, i, j in candidates:
        if used[i] or used[j]:
            continue
        used.update((i, j))
        left, right = (i, j) if rng.random() < 0.5 else (j, i)
        chosen.append((int(pool.image_ids[left]), int(pool.image_ids[right])))
        if len(chosen) >= count:
            break
    return chosen
