"""The Reroll and Cancel buttons under a job's reply (custom ids ``dreamrate:<action>:<job>``).

Custom ids carry the job id, so the buttons keep working after a restart without stored views.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

import discord

from dreamrate.bot.permissions import is_moderator
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import JobStatus
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.users import ensure_user, user_id_of
from dreamrate.generation.model_info import model_defaults
from dreamrate.generation.request import MAX_SEED, RequestInput, validate_request

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.bot.dreams import DreamRequests
    from dreamrate.generation.queue import JobRepository

__all__ = ["Buttons", "button_id", "parse_custom_id"]


def button_id(action: str, job_id: int) -> str:
    """The custom id of ``action``'s button for ``job_id``."""
    return f"dreamrate:{action}:{job_id}"


def parse_custom_id(custom_id: str) -> tuple[str, int] | None:
    """``(action, job id)`` of one of our buttons; None for anything else."""
    parts = custom_id.split(":")
    if len(parts) != 3 or parts[0] != "dreamrate" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


class Buttons:
    """Routes button presses to cancel or reroll; refusals are ephemeral one-liners."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        repo: JobRepository,
        dreams: DreamRequests,
        moderator_role: str | None,
    ) -> None:
        self.engine = engine
        self.repo = repo
        self.dreams = dreams
        self.moderator_role = moderator_role

    async def handle(self, interaction: discord.Interaction) -> None:
        """|coro| Answer ``interaction`` if it is a press of one of our buttons."""
        if interaction.type is not discord.InteractionType.component:
            return
        parsed = parse_custom_id(str((interaction.data or {}).get("custom_id", "")))
        if parsed is None:
            return
        try:
            await self._press(interaction, *parsed)
        except DreamrateError as exc:
            if interaction.response.is_done():
                await interaction.followup.send(exc.message, ephemeral=True)
            else:
                await interaction.response.send_message(exc.message, ephemeral=True)

    async def _press(self, interaction: discord.Interaction, action: str, job_id: int) -> None:
        job = await retry_on_disconnect(lambda: self.repo.get(job_id))
        if job is None or job.guild_id != interaction.guild_id:
            raise DreamrateError(f"There is no job {job_id}.")
        if action == "cancel":
            user = await retry_on_disconnect(
                lambda: ensure_user(self.engine, interaction.user.id, interaction.user.name)
            )
            moderator = is_moderator(interaction, self.moderator_role)
            status = await retry_on_disconnect(
                lambda: self.repo.cancel(job_id, by_user_id=user.id, is_moderator=moderator)
            )
            text = (
                f"Job {job_id} cancelled."
                if status is JobStatus.CANCELLED
                else f"Job {job_id} will stop at its next step."
            )
            await interaction.response.send_message(text, ephemeral=True)
        elif action == "reroll":
            # Today's limits and blocked terms, not the ones the job was made under.
            requester = await retry_on_disconnect(
                lambda: user_id_of(self.engine, interaction.user.id)
            )
            if requester != job.requester_id and not is_moderator(interaction, self.moderator_role):
                raise DreamrateError("Only the requester or a moderator can reroll this job.")
            seed = random.SystemRandom().randint(0, MAX_SEED)
            limits = await self.dreams.current_limits()
            request = validate_request(
                RequestInput(
                    prompt=job.prompt,
                    negative=job.negative_prompt,
                    seed=seed,
                    steps=job.steps,
                    guidance=job.guidance,
                    width=job.width,
                    height=job.height,
                    images=job.num_images,
                    model=job.model,
                ),
                limits,
                model_defaults(limits.loads(job.model)),
            )
            await self.dreams.enqueue(
                interaction,
                replace(request, notes=(f"reroll of job {job.id}, seed {seed}", *request.notes)),
            )
