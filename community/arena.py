"""The arena's rounds: old model against new, judged blind by the community.

A round is one prompt with one seed rendered by two models (two jobs the ordinary workers
serve, never delivered as ordinary posts), shown side by side with the sides drawn at
random and the models' names hidden; members choose with the comparison emoji, and their
choices land in the choice log like any comparison's. When the round closes its post names
the models. A member's ``/arena`` and a feed's standing round start here; the adapter
posts the pair and names the models (:mod:`dreamrate.bot.arena_rounds`); the results are
:mod:`.arena_results`.
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from dreamrate.community.refusals import CommunityError
from dreamrate.community.requests import prepare_request
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import ArenaRound, GuildSettings, Job, JobStatus
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import ensure_user
from dreamrate.generation.pipeline import looks_like_path
from dreamrate.generation.request import MAX_SEED, RequestInput

if TYPE_CHECKING:
    from dreamrate.community.members import Member
    from dreamrate.community.requests import Requests
    from dreamrate.generation.request import GenerationRequest

__all__ = [
    "ARENA_PROMPTS",
    "ArenaError",
    "ArenaRounds",
    "RoundPlan",
    "RoundState",
    "close_round",
    "fail_round",
    "feed_arena_channels",
    "open_round",
    "rounds_due",
    "shown_model_name",
    "start_round",
]

logger = logging.getLogger(__name__)

#: Prompts for a round started without one: plain subjects every model can draw.
ARENA_PROMPTS = (
    "a lighthouse on a cliff at dusk",
    "a bowl of ripe cherries on a wooden table",
    "a fox in fresh snow",
    "a quiet harbour at sunrise",
    "a city street after rain, neon reflections",
    "a mountain lake under the stars",
)
FINISHED = (JobStatus.FAILED, JobStatus.CANCELLED)
FEED_RETRY = timedelta(hours=1)  #: a feed waits this long after a failed round


class ArenaError(CommunityError):
    """An arena that cannot run or be reported."""


@dataclass(frozen=True)
class RoundState:
    id: int
    channel_id: int
    prompt: str
    left_job_id: int
    right_job_id: int
    left_model: str
    right_model: str
    left_status: JobStatus
    right_status: JobStatus
    message_id: int | None
    status: str


async def start_round(
    engine: AsyncEngine,
    *,
    guild_id: int,
    channel_id: int,
    prompt: str,
    seed: int,
    left_job_id: int,
    right_job_id: int,
) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(ArenaRound).values(
                guild_id=guild_id,
                channel_id=channel_id,
                prompt=prompt,
                seed=seed,
                left_job_id=left_job_id,
                right_job_id=right_job_id,
                status="rendering",
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def _rounds() -> Any:
    left, right = aliased(Job), aliased(Job)
    return (
        select(
            ArenaRound.id,
            ArenaRound.channel_id,
            ArenaRound.prompt,
            ArenaRound.left_job_id,
            ArenaRound.right_job_id,
            left.model.label("left_model"),
            right.model.label("right_model"),
            left.status.label("left_status"),
            right.status.label("right_status"),
            ArenaRound.message_id,
            ArenaRound.status,
        )
        .join(left, left.id == ArenaRound.left_job_id)
        .join(right, right.id == ArenaRound.right_job_id)
    )


async def rounds_due(engine: AsyncEngine, now: datetime | None = None) -> list[RoundState]:
    """Rounds with something to do: both images made (post), a job that ended without
    images (fail), or an open round past its time (close)."""
    now = now or utcnow()
    query = _rounds().where(
        or_(
            ArenaRound.status == "rendering",
            (ArenaRound.status == "open") & (ArenaRound.closes_at <= now),
        )
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(ArenaRound.id))).all()
    due = [RoundState(**row._mapping) for row in rows]
    return [
        r
        for r in due
        if r.status == "open"
        or JobStatus.DONE == r.left_status == r.right_status
        or r.left_status in FINISHED
        or r.right_status in FINISHED
    ]


async def feed_arena_channels(engine: AsyncEngine) -> list[tuple[int, int]]:
    """``(guild, feed channel)`` of every feed with the arena on and no round going there."""
    going = select(ArenaRound.id).where(
        ArenaRound.channel_id == GuildSettings.feed_channel_id,
        # A round going, or one that failed within the hour: a broken model is not
        # retried every few seconds.
        ArenaRound.status.in_(("rendering", "open"))
        | ((ArenaRound.status == "failed") & (ArenaRound.created_at > utcnow() - FEED_RETRY)),
    )
    query = select(GuildSettings.guild_id, GuildSettings.feed_channel_id).where(
        GuildSettings.feed_arena.is_(True),
        GuildSettings.feed_channel_id.is_not(None),
        ~going.exists(),
    )
    async with engine.connect() as conn:
        return [(int(g), int(c)) for g, c in (await conn.execute(query)).all()]


async def open_round(
    engine: AsyncEngine, round_id: int, message_id: int, closes_at: datetime
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(ArenaRound)
            .where(ArenaRound.id == round_id)
            .values(message_id=message_id, status="open", closes_at=closes_at)
        )


async def close_round(engine: AsyncEngine, round_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(ArenaRound)
            .where(ArenaRound.id == round_id)
            .values(status="closed", closed_at=utcnow())
        )


async def fail_round(engine: AsyncEngine, round_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(ArenaRound).where(ArenaRound.id == round_id).values(status="failed")
        )


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """A round about to be queued: its prompt, its seed, and the left and right requests."""

    prompt: str
    seed: int
    left: GenerationRequest
    right: GenerationRequest


def shown_model_name(model: str) -> str:
    """A model as members read it: a registered name or hub id as is, a folder by its name."""
    return Path(model).name if looks_like_path(model) else model


class ArenaRounds:
    """Starts rounds: two of the models ``/dream`` offers, drawn at random (the first shown
    left), one prompt and one seed, under the guild's limits like any request.

    Parameters
    ----------
    requests
        The requests use case (its engine, queue and limits).
    """

    def __init__(self, requests: Requests) -> None:
        self.requests = requests
        self.engine = requests.engine

    async def plan(
        self, guild_id: int, prompt: str | None, *, rng: random.Random | None = None
    ) -> RoundPlan:
        """|coro| A round's two requests under ``guild_id``'s limits, nothing written yet
        (an adapter refuses before it acknowledges). The prompt is checked first, so a
        blocked term is refused whatever the models; then that two models exist.

        Raises
        ------
        RequestError, ArenaError
            one sentence for the member.
        """
        rng = rng or random.SystemRandom()
        limits = await self.requests.limits_in(guild_id, asked_best_of=1)
        seed = rng.randint(0, MAX_SEED)
        text = prompt or rng.choice(ARENA_PROMPTS)
        prepare_request(RequestInput(prompt=text, seed=seed, images=1, best_of=1), limits)
        models = list(dict.fromkeys(limits.models))
        if len(models) < 2:
            raise ArenaError(
                "The arena needs two models; a maintainer registers one with `dreamrate models add`."
            )
        left, right = (
            prepare_request(
                RequestInput(prompt=text, seed=seed, images=1, model=m, best_of=1), limits
            )
            for m in rng.sample(models, 2)  # which two, and which one is shown left
        )
        return RoundPlan(left.prompt, seed, left, right)

    async def queue(
        self,
        plan: RoundPlan,
        guild_id: int,
        channel_id: int,
        member: Member,
        *,
        enforce_caps: bool = True,
    ) -> str:
        """|coro| Queue the round's two jobs for ``member`` and record the round in
        ``channel_id``; returns its prompt. Half a round is never left queued.

        Raises
        ------
        QueueFullError
            when the member's or the queue's cap is reached.
        """
        user = await retry_on_disconnect(
            lambda: ensure_user(self.engine, member.discord_id, member.name)
        )
        repo = self.requests.repo
        jobs = []
        try:
            for request in (plan.left, plan.right):
                # No channel: the worker renders it, the delivery loop never posts it.
                jobs.append(
                    await repo.enqueue(
                        request, requester_id=user.id, guild_id=guild_id, enforce_caps=enforce_caps
                    )
                )
        except BaseException:
            for job in jobs:  # half a round is no round: its first job goes too
                with contextlib.suppress(DreamrateError):
                    await repo.cancel(job.id, by_user_id=user.id)
            raise
        await retry_on_disconnect(
            lambda: start_round(
                self.engine,
                guild_id=guild_id,
                channel_id=channel_id,
                prompt=plan.prompt,
                seed=plan.seed,
                left_job_id=jobs[0].id,
                right_job_id=jobs[1].id,
            )
        )
        return plan.prompt

    async def feed_rounds(self, bot: Member) -> int:
        """|coro| A new round in every feed channel whose moderators turned the arena on and
        whose last round has closed, asked by ``bot``; returns how many started."""
        channels = await retry_on_disconnect(lambda: feed_arena_channels(self.engine))
        started = 0
        for guild_id, channel_id in channels:
            try:
                plan = await self.plan(guild_id, None)
                await self.queue(plan, guild_id, channel_id, bot, enforce_caps=False)
                started += 1
            except DreamrateError as exc:  # e.g. fewer than two models: try again later
                logger.warning("feed arena in channel %s: %s", channel_id, exc.message)
        return started
