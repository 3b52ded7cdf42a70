"""``/rate``, ``/compare`` and ``/stats``: images shown again for rating, pairs to choose
between, and what has been rated.

No ``from __future__ import annotations``: discord.py reads the option types at runtime.
"""

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from dreamrate.bot.embeds import fit_message
from dreamrate.bot.permissions import check_where_asked
from dreamrate.core.errors import DreamrateError
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.ratings.stats import rating_stats

if TYPE_CHECKING:
    from dreamrate.bot.feed import RatingPosts
    from dreamrate.community.requests import Requests

__all__ = ["RatingCog"]


class RatingCog(commands.Cog):
    """Rating on request.

    Parameters
    ----------
    requests
        Where a member may ask (the same checks as ``/dream``).
    posts
        Posts the images and pairs its rating queue picks (:class:`~dreamrate.bot.feed.
        RatingPosts`).
    """

    def __init__(self, requests: "Requests", posts: "RatingPosts") -> None:
        self.requests = requests
        self.posts = posts

    async def _turn(self, interaction: discord.Interaction, what: str) -> tuple[int, int]:
        """The checks of ``/rate`` and ``/compare`` (where, and the member's cooldown)
        before the acknowledgement; returns (guild, channel)."""
        await check_where_asked(self.requests, interaction, what)
        assert interaction.guild_id is not None and interaction.channel_id is not None
        wait = self.posts.cooldown(interaction.guild_id, interaction.user.id)
        if wait:
            raise DreamrateError(f"You can use {what} again in {max(1, round(wait))} s.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        return interaction.guild_id, interaction.channel_id

    @app_commands.command(
        name="rate",
        description="Post the images that most need ratings here, with the rating emoji.",
    )
    @app_commands.describe(count="How many images (1-10).")
    @app_commands.guild_only()
    async def rate(
        self, interaction: discord.Interaction, count: app_commands.Range[int, 1, 10] = 3
    ) -> None:
        guild_id, channel_id = await self._turn(interaction, "/rate")
        chosen = await self.posts.queue.images_to_rate(count, guild_id)
        if not chosen:
            await interaction.followup.send("No images to rate yet: try /dream!", ephemeral=True)
            return
        posted, already = await self.posts.post(channel_id, chosen, kind="rate")
        text = f"Posted {len(posted)} image(s) to rate."
        if already:
            links = " ".join(
                f"https://discord.com/channels/{guild_id}/{channel_id}/{m}" for m in already
            )
            text += f" Already here, waiting for your rating: {links}"
        await interaction.followup.send(fit_message(text), ephemeral=True)

    @app_commands.command(
        name="compare",
        description="Post pairs of images here: choose the one you prefer with ⬅️ or ➡️.",
    )
    @app_commands.describe(count="How many pairs (1-5).")
    @app_commands.guild_only()
    async def compare(
        self, interaction: discord.Interaction, count: app_commands.Range[int, 1, 5] = 1
    ) -> None:
        guild_id, channel_id = await self._turn(interaction, "/compare")
        pairs = await self.posts.queue.pairs_to_compare(
            count, guild_id, member_discord_id=interaction.user.id, channel_id=channel_id
        )
        if not pairs:
            await interaction.followup.send(
                "No pairs to compare yet (you judged them all, or there are fewer than two "
                "images): try /dream!",
                ephemeral=True,
            )
            return
        posted = await self.posts.compare(channel_id, pairs, kind="compare")
        emojis = self.posts.scale.choice_emojis
        await interaction.followup.send(
            f"Posted {len(posted)} pair(s): react {emojis[0]} or {emojis[1]} for the one you "
            f"prefer, {emojis[2]} if you can't choose.",
            ephemeral=True,
        )

    @app_commands.command(
        name="stats", description="Your ratings, the server's totals and the top raters."
    )
    @app_commands.guild_only()
    async def stats(self, interaction: discord.Interaction) -> None:
        guild_id = interaction.guild_id
        assert guild_id is not None
        found = await retry_on_disconnect(
            lambda: rating_stats(self.requests.engine, interaction.user.id, guild_id)
        )
        spread = (
            " ".join(f"{value:g}×{count}" for value, count in found.distribution.items())
            or "none yet"
        )
        leaders = ", ".join(f"{name} ({count})" for name, count in found.top) or "nobody yet"
        text = (
            f"You have rated {found.mine} image(s): {spread}.\n"
            f"Server: {found.total_ratings} rating(s) of {found.total_images} image(s) by {found.raters} member(s).\n"
            f"Top raters: {leaders}."
        )
        await interaction.response.send_message(text, ephemeral=True)
