"""A member's request to have something rendered: where it may be asked, what a server
allows (its own blocked terms, its default best-of), and the enqueue.

``/dream``, Reroll, ``/arena`` and ``dreamrate generate`` all come through here, so a
server's rules hold on every path: :func:`server_limits` is the one rule, pure, and
:class:`Requests` gathers what it reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dreamrate.aesthetic.predictor_registry import active_predictor_path
from dreamrate.community.moderation import get_guild_settings, is_banned_in
from dreamrate.community.refusals import NotAllowed, NotFound
from dreamrate.db.models import JobStatus
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import ensure_user, user_id_of
from dreamrate.generation.model_info import model_defaults
from dreamrate.generation.request import (
    MAX_SEED,
    GenerationLimits,
    GenerationRequest,
    RequestInput,
    parse_size,
    validate_request,
)
from dreamrate.generation.served_models import list_models

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.community.members import Member
    from dreamrate.db.models import GuildSettings
    from dreamrate.generation.queue import JobRecord, JobRepository, QueueInfo

__all__ = [
    "TOKEN_LIFETIME",
    "Enqueued",
    "Followup",
    "Requests",
    "prepare_request",
    "server_limits",
]

#: Interaction tokens last 15 minutes; leave a margin for the last follow-up.
TOKEN_LIFETIME = timedelta(minutes=14)


def server_limits(
    base: GenerationLimits, guild: GuildSettings | None, *, predictor_active: bool
) -> GenerationLimits:
    """The limits in force in a guild (pure): ``base`` (the settings and today's registered
    models) with the guild's own blocked terms added and its default best-of; best-of-N
    needs an active predictor to pick with, so without one a guild's default waits (a
    member asking for it explicitly is refused by :func:`validate_request`)."""
    limits = replace(base, can_pick=predictor_active)
    if guild is not None and guild.blocked_terms:
        # The server's own list, set by its moderators on the web home.
        limits = replace(limits, blocked_terms=(*limits.blocked_terms, *guild.blocked_terms))
    if guild is not None and guild.best_of and predictor_active:
        limits = replace(limits, default_best_of=min(guild.best_of, limits.max_best_of))
    elif not predictor_active:
        limits = replace(limits, default_best_of=1)
    return limits


def prepare_request(
    raw: RequestInput, limits: GenerationLimits, size: str | None = None
) -> GenerationRequest:
    """``raw`` (with ``size`` as typed, ``N`` or ``WxH``) checked against ``limits``, every
    default filled in from the chosen model's own.

    Raises
    ------
    RequestError
        one sentence naming the field and what is allowed.
    """
    model = raw.model or limits.default_model
    if size:
        width, height = parse_size(size)
        raw = replace(raw, width=width, height=height)
    return validate_request(replace(raw, model=model), limits, model_defaults(limits.loads(model)))


@dataclass(frozen=True, slots=True)
class Followup:
    """The Discord interaction a job answers: its id (an enqueue retried after a lost
    commit finds the job it made) and its token, for the follow-ups."""

    id: int
    token: str


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A queued job and where it stands."""

    job: JobRecord
    info: QueueInfo


class Requests:
    """What members may have rendered, and where.

    Parameters
    ----------
    engine
        The database (members, guild settings, registered models, the active predictor).
    repo
        The generation queue.
    limits
        What the settings allow (:meth:`GenerationLimits.from_settings`).
    """

    def __init__(
        self, *, engine: AsyncEngine, repo: JobRepository, limits: GenerationLimits
    ) -> None:
        self.engine = engine
        self.repo = repo
        self.limits = limits

    async def current_limits(self) -> GenerationLimits:
        """|coro| The settings' limits with the models registered today (one added or
        removed since start counts)."""
        specs = await retry_on_disconnect(lambda: list_models(self.engine))
        self.limits = replace(self.limits, registered={s.name: s.loads for s in specs})
        return self.limits

    async def limits_in(
        self, guild_id: int | None, *, asked_best_of: int | None = None
    ) -> GenerationLimits:
        """|coro| The limits in force in ``guild_id`` (None: no guild, the settings' own)
        for a request asking for ``asked_best_of`` candidates (None: the default)."""
        limits = await self.current_limits()
        guild = (
            None
            if guild_id is None
            else await retry_on_disconnect(lambda: get_guild_settings(self.engine, guild_id))
        )
        default = guild.best_of if guild is not None and guild.best_of else 1
        active = False
        if asked_best_of not in (None, 1) or default > 1:  # only then is a predictor needed
            active = (
                await retry_on_disconnect(lambda: active_predictor_path(self.engine)) is not None
            )
        return server_limits(limits, guild, predictor_active=active)

    async def check(
        self, guild_id: int | None, channel_id: int | None, member: Member, what: str = "/dream"
    ) -> None:
        """|coro| Refuse at once what may not happen here: outside a guild, a banned member,
        a channel not on the guild's allow-list.

        Only reads (which never wait for a busy SQLite writer), so an adapter can check
        before it acknowledges.

        Raises
        ------
        NotAllowed
            one sentence for the member.
        """
        if guild_id is None:
            raise NotAllowed(f"{what} works in a server's channels, not in direct messages.")
        if await retry_on_disconnect(
            lambda: is_banned_in(self.engine, guild_id, member.discord_id)
        ):
            raise NotAllowed("You are banned from generating and rating images here.")
        guild = await retry_on_disconnect(lambda: get_guild_settings(self.engine, guild_id))
        if (
            guild is not None
            and guild.allowed_channel_ids
            and channel_id not in guild.allowed_channel_ids
        ):
            where = ", ".join(f"<#{c}>" for c in guild.allowed_channel_ids)
            raise NotAllowed(f"{what} is not allowed in this channel; use {where}.")

    async def dream(
        self, raw: RequestInput, size: str | None, *, guild_id: int | None
    ) -> GenerationRequest:
        """|coro| What a member typed (``/dream``), checked against the guild's limits.

        Raises
        ------
        RequestError
            one sentence naming the field and what is allowed.
        """
        limits = await self.limits_in(guild_id, asked_best_of=raw.best_of)
        return prepare_request(raw, limits, size)

    async def job(self, job_id: int, guild_id: int | None) -> JobRecord:
        """|coro| Job ``job_id`` of ``guild_id`` (other guilds' jobs stay theirs).

        Raises
        ------
        NotFound
            when there is no such job there.
        """
        job = await retry_on_disconnect(lambda: self.repo.get(job_id))
        if job is None or job.guild_id != guild_id:
            raise NotFound(f"There is no job {job_id}.")
        return job

    async def _owns(self, job: JobRecord, member: Member, moderator: bool, what: str) -> None:
        if moderator:
            return
        mine = await retry_on_disconnect(lambda: user_id_of(self.engine, member.discord_id))
        if mine != job.requester_id:
            raise NotAllowed(f"Only the requester or a moderator can {what} this job.")

    async def reroll(
        self,
        job_id: int,
        *,
        guild_id: int | None,
        member: Member,
        moderator: bool,
        rng: random.Random | None = None,
    ) -> GenerationRequest:
        """|coro| The job's settings again (its best-of too) with a new seed, checked against
        today's limits and blocked terms, not those the job was made under.

        Raises
        ------
        NotFound, NotAllowed, RequestError
            one sentence for the member.
        """
        job = await self.job(job_id, guild_id)
        await self._owns(job, member, moderator, "reroll")
        seed = (rng or random.SystemRandom()).randint(0, MAX_SEED)
        raw = RequestInput(
            prompt=job.prompt,
            negative=job.negative_prompt,
            seed=seed,
            steps=job.steps,
            guidance=job.guidance,
            width=job.width,
            height=job.height,
            images=job.num_images,
            model=job.model,
            best_of=job.best_of,
        )
        request = prepare_request(raw, await self.limits_in(guild_id, asked_best_of=job.best_of))
        return replace(request, notes=(f"reroll of job {job.id}, seed {seed}", *request.notes))

    async def cancel(
        self, job_id: int, *, guild_id: int | None, member: Member, moderator: bool
    ) -> JobStatus:
        """|coro| Cancel a job (its requester or a moderator): cancelled at once while it
        waits, at its next step while it renders. Returns its status after.

        Raises
        ------
        NotFound, JobError
            one sentence for the member.
        """
        await self.job(job_id, guild_id)
        user = await retry_on_disconnect(
            lambda: ensure_user(self.engine, member.discord_id, member.name)
        )
        return await retry_on_disconnect(
            lambda: self.repo.cancel(job_id, by_user_id=user.id, is_moderator=moderator)
        )

    async def enqueue(
        self,
        request: GenerationRequest,
        *,
        member: Member,
        guild_id: int | None,
        channel_id: int | None,
        followup: Followup | None = None,
        now: datetime | None = None,
    ) -> Enqueued:
        """|coro| Queue ``request`` for ``member`` (the writes: an adapter acknowledges
        first) and say where it stands.

        Raises
        ------
        QueueFullError
            when the member's or the queue's cap is reached.
        """
        user = await retry_on_disconnect(
            lambda: ensure_user(self.engine, member.discord_id, member.name)
        )
        expires = (now or utcnow()) + TOKEN_LIFETIME
        record = await retry_on_disconnect(
            lambda: self.repo.enqueue(
                request,
                requester_id=user.id,
                guild_id=guild_id,
                channel_id=channel_id,
                interaction_token=None if followup is None else followup.token,
                interaction_token_expires_at=None if followup is None else expires,
                interaction_id=None if followup is None else followup.id,
            )
        )
        info = await retry_on_disconnect(lambda: self.repo.queue_info(record.id))
        return Enqueued(record, info)
