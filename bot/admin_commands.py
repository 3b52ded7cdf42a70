"""``/admin``: moderators (Manage Server, Administrator, the owner, or the moderator role of
the settings) act on their own server.

The rules (nobody bans themselves, the settings' ranges, the audit entry of every action)
are :class:`~dreamrate.community.moderation.Moderation`'s, the same the web home's
moderation page calls; this cog translates options into calls and answers privately.

No ``from __future__ import annotations``: discord.py reads option types at runtime.
"""

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from dreamrate.bot.embeds import fit_message
from dreamrate.bot.permissions import member_of, moderates
from dreamrate.community.guild_settings import FEED_COMPARE_PERCENT, FEED_MINUTES
from dreamrate.community.members import Member
from dreamrate.core.errors import DreamrateError
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.generation.served_models import list_models

if TYPE_CHECKING:
    from dreamrate.community.moderation import Moderation

__all__ = ["AdminCog"]

#: Where the audit log says an action came from.
SOURCE = "discord"


def _message_id(text: str) -> int:
    if not text.isdigit():
        raise DreamrateError("message_id: give the image message's id (a number).")
    return int(text)


@app_commands.guild_only()
class AdminCog(
    commands.GroupCog,
    group_name="admin",
    group_description="Moderation: channels, feed, bans, images, flags, models.",
):
    """The ``/admin`` group.

    Parameters
    ----------
    client
        The connected client (a removed image's messages are deleted with it).
    moderation
        The moderation use case.
    moderator_role
        The role named in the settings that makes a member a moderator.
    offered_models
        The models ``/dream`` offers now (``/admin models`` tells which registered ones
        wait for a restart).
    arena_feed_on
        Called when a moderator turns a feed's arena on, so its first round starts now
        rather than at the arena's next look at the feeds.
    """

    def __init__(
        self,
        client: discord.Client,
        moderation: "Moderation",
        *,
        moderator_role: str | None,
        offered_models: Callable[[], list[str]],
        arena_feed_on: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = client
        self.moderation = moderation
        self.moderator_role = moderator_role
        self.offered_models = offered_models
        self.arena_feed_on = arena_feed_on
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not moderates(interaction, self.moderator_role):
            raise app_commands.CheckFailure("Only moderators (Manage Server) can use /admin.")
        return True

    @staticmethod
    def _guild(interaction: discord.Interaction) -> int:
        assert interaction.guild_id is not None  # guild-only
        return interaction.guild_id

    async def _delete(self, messages: list[tuple[int, int]]) -> int:
        deleted = 0
        for channel_id, message_id in messages:  # its own message and every repost
            partial = self.client.get_partial_messageable(channel_id).get_partial_message(
                message_id
            )
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                await partial.delete()
                deleted += 1
        return deleted

    @app_commands.command(
        name="allow", description="Allow /dream in a channel (or stop allowing it)."
    )
    async def allow(
        self, interaction: discord.Interaction, channel: app_commands.AppCommandChannel
    ) -> None:
        allowed = await self.moderation.toggle_channel(
            self._guild(interaction), member_of(interaction), channel.id, source=SOURCE
        )
        if channel.id in allowed:
            text = f"/dream is allowed in {channel.mention}."
        else:
            text = f"/dream is no longer allowed in {channel.mention}."
        suffix = "" if allowed else " No channel is listed now, so /dream works everywhere."
        await interaction.response.send_message(text + suffix, ephemeral=True)

    @app_commands.command(
        name="feed", description="Post an image needing ratings to a channel every N minutes."
    )
    @app_commands.describe(
        compare="Percent of posts that ask to choose between two images (0: ratings only).",
        arena="Keep an arena round (two models, judged blind) going in the feed channel.",
    )
    async def feed(
        self,
        interaction: discord.Interaction,
        channel: app_commands.AppCommandChannel,
        minutes: app_commands.Range[int, FEED_MINUTES[0], FEED_MINUTES[1]] = 60,
        compare: app_commands.Range[int, FEED_COMPARE_PERCENT[0], FEED_COMPARE_PERCENT[1]]
        | None = None,
        arena: bool | None = None,
    ) -> None:
        # Left out, the share stays as it was (changing the interval keeps the mix).
        changes: dict[str, object] = {"feed_channel_id": channel.id}
        changes["feed_interval_minutes"] = minutes
        if compare is not None:
            changes["feed_compare_percent"] = compare
        if arena is not None:
            changes["feed_arena"] = arena
        current = await self.moderation.change_settings(
            self._guild(interaction), member_of(interaction), source=SOURCE, **changes
        )
        share = current.feed_compare_percent or 0
        mix = f", {share}% of posts comparisons" if share else ""
        if arena:
            mix += ", an arena round always going"
            self.arena_feed_on()
        await interaction.response.send_message(
            f"Rating feed: {channel.mention} every {minutes} min{mix}.", ephemeral=True
        )

    @app_commands.command(
        name="bestof",
        description="Candidates /dream renders per image when a member asks for none.",
    )
    @app_commands.describe(
        candidates="The community's predictor posts the best of this many (1: off)."
    )
    async def bestof(self, interaction: discord.Interaction, candidates: int) -> None:
        await self.moderation.change_settings(
            self._guild(interaction), member_of(interaction), source=SOURCE, best_of=candidates
        )
        said = (
            f"/dream now renders {candidates} candidates per image and posts the best"
            if candidates > 1
            else "/dream renders one image per image asked for"
        )
        await interaction.response.send_message(
            f"{said} (members may still ask otherwise).", ephemeral=True
        )

    @app_commands.command(name="ban", description="Ban a member from generating and rating.")
    async def ban(self, interaction: discord.Interaction, member: discord.User) -> None:
        await self.moderation.ban(
            self._guild(interaction),
            member_of(interaction),
            Member(member.id, member.name),
            banned=True,
            source=SOURCE,
        )
        await interaction.response.send_message(
            f"{member.mention} is banned from generating and rating in this server.",
            ephemeral=True,
        )

    @app_commands.command(name="unban", description="Lift a ban.")
    async def unban(self, interaction: discord.Interaction, member: discord.User) -> None:
        await self.moderation.ban(
            self._guild(interaction),
            member_of(interaction),
            Member(member.id, member.name),
            banned=False,
            source=SOURCE,
        )
        await interaction.response.send_message(
            f"{member.mention} may generate and rate again.", ephemeral=True
        )

    @app_commands.command(
        name="remove",
        description="Remove an image (deletes its message, keeps it out of datasets).",
    )
    async def remove(self, interaction: discord.Interaction, message_id: str) -> None:
        image, _ = await self.moderation.remove(
            self._guild(interaction),
            member_of(interaction),
            source=SOURCE,
            delete=self._delete,
            message_id=_message_id(message_id),
        )
        await interaction.response.send_message(f"Image {image.id} removed.", ephemeral=True)

    @app_commands.command(
        name="dismiss",
        description="Close an image's reports as reviewed (it stays; it was fine).",
    )
    async def dismiss(self, interaction: discord.Interaction, message_id: str) -> None:
        _, closed = await self.moderation.dismiss(
            self._guild(interaction),
            member_of(interaction),
            source=SOURCE,
            message_id=_message_id(message_id),
        )
        await interaction.response.send_message(
            f"Closed {closed} report(s); the image stays.", ephemeral=True
        )

    @app_commands.command(name="flags", description="Images members reported with the flag emoji.")
    async def flags(self, interaction: discord.Interaction) -> None:
        guild = self._guild(interaction)
        found = await self.moderation.flags(guild)
        if not found:
            await interaction.response.send_message("No open reports.", ephemeral=True)
            return
        lines = [
            f"image {f.image_id}: {f.reports} report(s) https://discord.com/channels/{guild}/{f.channel_id}/{f.message_id}"
            for f in found
        ]
        await interaction.response.send_message(fit_message("\n".join(lines)), ephemeral=True)

    @app_commands.command(
        name="models", description="The models /dream can use, registered ones too."
    )
    async def models(self, interaction: discord.Interaction) -> None:
        specs = await retry_on_disconnect(lambda: list_models(self.moderation.engine))
        offered = set(self.offered_models())
        lines = [f"configured: {', '.join(sorted(offered - {s.name for s in specs})) or '-'}"]
        for spec in specs:
            what = f"LoRA on {spec.base}" if spec.kind == "lora" else "diffusers model"
            later = "" if spec.name in offered else " (in /dream's list after the bot restarts)"
            lines.append(f"{spec.name}: {what}, {spec.path}{later}")
        if not specs:
            lines.append("No registered models (`dreamrate models add`).")
        await interaction.response.send_message(fit_message("\n".join(lines)), ephemeral=True)
