"""``/dream``, ``/job`` and the Reroll and Cancel buttons under a job's reply.

The rules (where a member may ask, a server's limits, the enqueue) are the requests use
case's (:mod:`dreamrate.community.requests`); this cog translates an interaction into one
call there and the answer into a message.

No ``from __future__ import annotations``: discord.py reads the option types, with ranges
taken from settings, from the callback's annotations at runtime; that is why ``/dream``'s
cog is made from the settings by :func:`dream_cog`.
"""

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from dreamrate.bot.embeds import (
    fit_message,
    job_status_text,
    job_view,
    parse_custom_id,
)
from dreamrate.bot.permissions import check_where_asked, member_of, moderates
from dreamrate.bot.tree import answer_privately, answered, thinking
from dreamrate.community.requests import Followup
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import JobStatus
from dreamrate.generation.request import MAX_SEED, RequestInput

if TYPE_CHECKING:
    from dreamrate.community.requests import Requests
    from dreamrate.core.settings import GenerationSettings
    from dreamrate.generation.request import GenerationRequest

__all__ = ["MAX_MODEL_CHOICES", "DreamCog", "dream_cog"]

logger = logging.getLogger(__name__)

#: Discord offers at most 25 choices for one option.
MAX_MODEL_CHOICES = 25


class DreamCog(commands.Cog):
    """Requests to render, and the buttons under their replies.

    Parameters
    ----------
    requests
        The requests use case.
    moderator_role
        The role named in the settings that makes a member a moderator.
    """

    def __init__(self, requests: "Requests", *, moderator_role: str | None) -> None:
        self.requests = requests
        self.moderator_role = moderator_role

    async def cog_load(self) -> None:
        """|coro| ``/dream`` offers the models registered now (before the commands sync)."""
        limits = await self.requests.current_limits()
        self.offer_models(limits.models)

    def offer_models(self, models: "list[str] | tuple[str, ...]") -> None:
        """Set the choices of ``/dream``'s ``model`` option."""
        choices = [app_commands.Choice(name=m[-100:], value=m) for m in models]
        app_commands.choices(model=choices[:MAX_MODEL_CHOICES])(self._dream_command())

    def offered_models(self) -> list[str]:
        """The ``model`` choices ``/dream`` offers now."""
        parameter = self._dream_command().get_parameter("model")
        return [str(c.value) for c in (parameter.choices if parameter else [])]

    def _dream_command(self) -> app_commands.Command:  # type: ignore[type-arg]
        for command in self.get_app_commands():
            if command.name == "dream" and isinstance(command, app_commands.Command):
                return command
        raise LookupError("this cog has no /dream (make it with dream_cog)")

    async def _enqueue(
        self, interaction: discord.Interaction, request: "GenerationRequest"
    ) -> None:
        """Check, acknowledge, then queue and show the position (the writes come after the
        acknowledgement, which must come within 3 s)."""
        member = member_of(interaction)
        await check_where_asked(self.requests, interaction, "/dream")
        await thinking(interaction)
        queued = await self.requests.enqueue(
            request,
            member=member,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            followup=Followup(interaction.id, interaction.token),
        )
        notes = "".join(f"\n-# {note}" for note in request.notes)
        await interaction.edit_original_response(
            content=job_status_text(queued.job, queued.info) + notes,
            view=job_view(queued.job.id, running=True),
        )
        answered(interaction)

    async def dream_requested(
        self, interaction: discord.Interaction, raw: RequestInput, size: str | None
    ) -> None:
        """|coro| What the member typed, checked against the guild's limits (a refusal is
        private and queues nothing), then queued."""
        request = await self.requests.dream(raw, size, guild_id=interaction.guild_id)
        await self._enqueue(interaction, request)

    @app_commands.command(name="job", description="Show the full parameters and seed of a job.")
    @app_commands.guild_only()
    async def job(self, interaction: discord.Interaction, id: int) -> None:
        record = await self.requests.job(id, interaction.guild_id)
        text = (
            f"Job {record.id}: {discord.utils.escape_markdown(record.prompt)}\n"
            f"negative: {record.negative_prompt or '-'} · seed {record.seed} · {record.width}x{record.height} · "
            f"{record.steps} steps · guidance {record.guidance:g} · {record.num_images} image(s) · {record.status.value}"
        )
        await interaction.response.send_message(fit_message(text), ephemeral=True)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A press of one of our buttons (their custom ids carry the job: they work across
        restarts without stored views)."""
        if interaction.type is not discord.InteractionType.component:
            return
        parsed = parse_custom_id(str((interaction.data or {}).get("custom_id", "")))
        if parsed is None:
            return
        action, job_id = parsed
        try:
            if action == "cancel":
                await self._cancel(interaction, job_id)
            elif action == "reroll":
                await self._reroll(interaction, job_id)
        except DreamrateError as exc:
            await answer_privately(interaction, exc.message)

    async def _cancel(self, interaction: discord.Interaction, job_id: int) -> None:
        status = await self.requests.cancel(
            job_id,
            guild_id=interaction.guild_id,
            member=member_of(interaction),
            moderator=moderates(interaction, self.moderator_role),
        )
        text = (
            f"Job {job_id} cancelled."
            if status is JobStatus.CANCELLED
            else f"Job {job_id} will stop at its next step."
        )
        await interaction.response.send_message(text, ephemeral=True)

    async def _reroll(self, interaction: discord.Interaction, job_id: int) -> None:
        request = await self.requests.reroll(
            job_id,
            guild_id=interaction.guild_id,
            member=member_of(interaction),
            moderator=moderates(interaction, self.moderator_role),
        )
        await self._enqueue(interaction, request)


def dream_cog(
    g: "GenerationSettings", requests: "Requests", *, moderator_role: str | None
) -> DreamCog:
    """The :class:`DreamCog` with ``/dream``'s option ranges taken from the settings ``g``
    (discord.py reads them from the annotations, so the class is made here)."""

    class Dream(DreamCog):
        # Generation and rating belong to a server's community: guild-only (not in DMs).
        @app_commands.command(
            name="dream",
            description="Render a prompt with Stable Diffusion; rate the images with emoji.",
        )
        @app_commands.guild_only()
        @app_commands.describe(
            prompt="What to draw.",
            negative="What to avoid.",
            seed="Seed of the first image (random if empty).",
            steps=f"Denoising steps (1-{g.max_steps}).",
            guidance=f"Guidance scale (0-{g.max_guidance:g}).",
            size=f"N or WxH in pixels, multiples of 8 from {g.min_size} to {g.max_size}.",
            images=f"How many images (1-{g.max_images}).",
            model="Which model renders it.",
            best_of=f"Render this many candidates per image; the community's predictor posts the best (1-{g.max_best_of}).",
        )
        async def dream(
            self,
            interaction: discord.Interaction,
            prompt: str,
            negative: str | None = None,
            seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
            steps: app_commands.Range[int, 1, g.max_steps] | None = None,
            guidance: app_commands.Range[float, 0.0, g.max_guidance] | None = None,
            size: str | None = None,
            images: app_commands.Range[int, 1, g.max_images] | None = None,
            model: str | None = None,
            best_of: int | None = None,
        ) -> None:
            raw = RequestInput(
                prompt=prompt,
                negative=negative,
                seed=seed,
                steps=steps,
                guidance=guidance,
                images=images,
                model=model,
                best_of=best_of,
            )
            await self.dream_requested(interaction, raw, size)

    return Dream(requests, moderator_role=moderator_role)
