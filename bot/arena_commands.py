"""``/arena``: two models draw one prompt with one seed, shown side by side, judged blind.

The round's rules (the guild's limits, two models, half a round never left queued) are the
community's (:mod:`dreamrate.community.arena`); :class:`~dreamrate.bot.arena_rounds.Arena`
posts it when both images are made.

No ``from __future__ import annotations``: discord.py reads the option types at runtime.
"""

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from dreamrate.bot.embeds import short
from dreamrate.bot.permissions import check_where_asked, member_of
from dreamrate.bot.tree import answered, thinking

if TYPE_CHECKING:
    from dreamrate.community.arena import ArenaRounds

__all__ = ["ArenaCog"]


class ArenaCog(commands.Cog):
    """The ``/arena`` command.

    Parameters
    ----------
    rounds
        The arena's use case.
    """

    def __init__(self, rounds: "ArenaRounds") -> None:
        self.rounds = rounds

    @app_commands.command(
        name="arena",
        description="Two models draw one prompt with one seed; choose the better, blind.",
    )
    @app_commands.describe(prompt="What both models draw (a stock prompt if empty).")
    @app_commands.guild_only()
    async def arena(self, interaction: discord.Interaction, prompt: str | None = None) -> None:
        """Checked (where, the prompt, two models) before the acknowledgement; queued after."""
        await check_where_asked(self.rounds.requests, interaction, "/arena")
        assert interaction.guild_id is not None and interaction.channel_id is not None
        plan = await self.rounds.plan(interaction.guild_id, prompt)
        await thinking(interaction)
        text = await self.rounds.queue(
            plan, interaction.guild_id, interaction.channel_id, member_of(interaction)
        )
        await interaction.followup.send(
            f"Arena round started: two models draw “{short(text, 200)}” with the same seed. "
            "The pair appears here, unnamed, when both are done."
        )
        answered(interaction)
