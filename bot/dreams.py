"""Turning ``/dream`` (and Reroll) into a queued job: validate, check, defer, enqueue, reply."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import discord

from dreamrate.aesthetic.registry import active_predictor_path
from dreamrate.bot.embeds import job_status_text, job_view
from dreamrate.bot.permissions import refusal_for_posting
from dreamrate.core.errors import DreamrateError
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import ensure_user
from dreamrate.generation.model_info import model_defaults
from dreamrate.generation.registry import list_models
from dreamrate.generation.request import (
    GenerationLimits,
    GenerationRequest,
    RequestInput,
    parse_size,
    validate_request,
)
from dreamrate.ratings.moderation import get_guild_settings, is_banned_in

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.generation.queue import JobRepository

__all__ = ["TOKEN_LIFETIME", "DreamRequests"]

#: Interaction tokens last 15 minutes; leave a margin for the last follow-up.
TOKEN_LIFETIME = timedelta(minutes=14)


class DreamRequests:
    """The enqueue policy shared by ``/dream`` and the Reroll button.

    Parameters
    ----------
    engine
        The database (members, guild settings).
    repo
        The generation queue.
    limits
        What a request may ask for.
    """

    def __init__(
        self, *, engine: AsyncEngine, repo: JobRepository, limits: GenerationLimits
    ) -> None:
        self.engine = engine
        self.repo = repo
        self.limits = limits

    async def dream(
        self, interaction: discord.Interaction, raw: RequestInput, size: str | None
    ) -> None:
        """|coro| Validate what the member typed, then :meth:`enqueue` it.

        Raises
        ------
        DreamrateError
            one sentence for the member (bad parameter, ban, channel, full queue).
        """
        # Validate first (fast, reads only): refusals are ephemeral and enqueue nothing. The
        # registered models are read each time, so one added or removed since start counts.
        limits = await self.current_limits()
        if interaction.guild_id is not None:
            guild_id = interaction.guild_id
            guild = await retry_on_disconnect(lambda: get_guild_settings(self.engine, guild_id))
            if guild is not None and guild.blocked_terms:
                # The server's own list, set by its moderators on the web home.
                terms = (*limits.blocked_terms, *guild.blocked_terms)
                limits = replace(limits, blocked_terms=terms)
            if guild is not None and guild.best_of:
                limits = replace(limits, default_best_of=min(guild.best_of, limits.max_best_of))
        if raw.best_of not in (None, 1) or limits.default_best_of > 1:
            active = await retry_on_disconnect(lambda: active_predictor_path(self.engine))
            limits = replace(limits, can_pick=active is not None)
            if active is None and raw.best_of is None:
                limits = replace(limits, default_best_of=1)  # the guild's default waits for one
        model = raw.model or limits.default_model
        width, height = parse_size(size) if size else (None, None)
        checked = RequestInput(
            prompt=raw.prompt,
            negative=raw.negative,
            seed=raw.seed,
            steps=raw.steps,
            guidance=raw.guidance,
            images=raw.images,
            width=width,
            height=height,
            model=model,
            best_of=raw.best_of,
        )
        await self.enqueue(
            interaction, validate_request(checked, limits, model_defaults(limits.loads(model)))
        )

    async def current_limits(self) -> GenerationLimits:
        """|coro| The limits with today's registered models."""
        specs = await retry_on_disconnect(lambda: list_models(self.engine))
        self.limits = replace(self.limits, registered={s.name: s.loads for s in specs})
        return self.limits

    async def check(self, interaction: discord.Interaction, what: str = "/dream") -> None:
        """|coro| Refuse at once what may not happen here: outside a guild, a banned member,
        a channel not on the allow-list, or one where the bot cannot post images.

        Only reads (which never wait for a busy SQLite writer), so the acknowledgement that
        follows stays well inside Discord's 3 s.

        Raises
        ------
        DreamrateError
            one sentence for the member.
        """
        if interaction.guild_id is None:
            raise DreamrateError(f"{what} works in a server's channels, not in direct messages.")
        guild_id = interaction.guild_id
        if await retry_on_disconnect(
            lambda: is_banned_in(self.engine, guild_id, interaction.user.id)
        ):
            raise DreamrateError("You are banned from generating and rating images here.")
        guild = await retry_on_disconnect(lambda: get_guild_settings(self.engine, guild_id))
        if (
            guild is not None
            and guild.allowed_channel_ids
            and interaction.channel_id not in guild.allowed_channel_ids
        ):
            where = ", ".join(f"<#{c}>" for c in guild.allowed_channel_ids)
            raise DreamrateError(f"{what} is not allowed in this channel; use {where}.")
        refusal = refusal_for_posting(interaction.app_permissions)
        if refusal is not None:
            raise DreamrateError(refusal)

    async def enqueue(self, interaction: discord.Interaction, request: GenerationRequest) -> None:
        """|coro| Check, acknowledge, then queue and show the position (the writes come
        after the acknowledgement)."""
        await self.check(interaction)
        await interaction.response.defer(thinking=True)
        user = await retry_on_disconnect(
            lambda: ensure_user(self.engine, interaction.user.id, interaction.user.name)
        )
        record = await retry_on_disconnect(
            lambda: self.repo.enqueue(
                request,
                requester_id=user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                interaction_token=interaction.token,
                interaction_token_expires_at=utcnow() + TOKEN_LIFETIME,
                interaction_id=interaction.id,
            )
        )
        info = await retry_on_disconnect(lambda: self.repo.queue_info(record.id))
        notes = "".join(f"\n-# {note}" for note in request.notes)
        await interaction.edit_original_response(
            content=job_status_text(record, info) + notes, view=job_view(record.id, running=True)
        )
