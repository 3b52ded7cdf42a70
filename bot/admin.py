"""The /admin commands for moderators (Manage Server, or the configured moderator role).

No ``from __future__ import annotations``: discord.py reads option types at runtime.
"""

import contextlib
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from dreamrate.aesthetic.registry import active_predictor_path
from dreamrate.bot.commands import offered_models
from dreamrate.bot.embeds import fit_message
from dreamrate.bot.permissions import is_moderator
from dreamrate.core.errors import DreamrateError
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.generation.registry import list_models
from dreamrate.ratings.audit import audit
from dreamrate.ratings.moderation import (
    dismiss_reports,
    get_guild_settings,
    open_flags,
    remove_image,
    set_banned,
    update_guild_settings,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["register_admin"]

logger = logging.getLogger(__name__)


def register_admin(
    tree: app_commands.CommandTree,
    *,
    client: discord.Client,
    engine: "AsyncEngine",
    moderator_role: str | None,
    max_best_of: int = 1,
) -> None:
    """Add the /admin group to ``tree``."""

    async def moderators_only(interaction: discord.Interaction) -> bool:
        if not is_moderator(interaction, moderator_role):
            raise app_commands.CheckFailure("Only moderators (Manage Server) can use /admin.")
        return True

    admin = app_commands.Group(
        name="admin",
        description="Moderation: channels, feed, bans, images, flags, models.",
        guild_only=True,
    )
    admin.interaction_check = moderators_only  # type: ignore[method-assign]

    async def record(
        interaction: discord.Interaction, action: str, target: str, **detail: object
    ) -> None:
        """The action in the guild's audit log, as the web home's moderation page shows it."""
        assert interaction.guild_id is not None
        await retry_on_disconnect(
            lambda: audit(
                engine,
                guild_id=interaction.guild_id,
                actor_discord_id=interaction.user.id,
                actor_name=interaction.user.name,
                action=action,
                target=target,
                source="discord",
                detail=detail,
            )
        )

    @admin.command(name="allow", description="Allow /dream in a channel (or stop allowing it).")
    async def allow(
        interaction: discord.Interaction, channel: app_commands.AppCommandChannel
    ) -> None:
        assert interaction.guild_id is not None
        current = await retry_on_disconnect(
            lambda: get_guild_settings(engine, interaction.guild_id)
        )
        allowed = list(current.allowed_channel_ids) if current else []
        if channel.id in allowed:
            allowed.remove(channel.id)
            text = f"/dream is no longer allowed in {channel.mention}."
        else:
            allowed.append(channel.id)
            text = f"/dream is allowed in {channel.mention}."
        await retry_on_disconnect(
            lambda: update_guild_settings(engine, interaction.guild_id, allowed_channel_ids=allowed)
        )
        suffix = "" if allowed else " No channel is listed now, so /dream works everywhere."
        await interaction.response.send_message(text + suffix, ephemeral=True)

    @admin.command(
        name="feed", description="Post an image needing ratings to a channel every N minutes."
    )
    @app_commands.describe(
        compare="Percent of posts that ask to choose between two images (0: ratings only).",
        arena="Keep an arena round (two models, judged blind) going in the feed channel.",
    )
    async def feed(
        interaction: discord.Interaction,
        channel: app_commands.AppCommandChannel,
        minutes: app_commands.Range[int, 1, 10080] = 60,
        compare: app_commands.Range[int, 0, 100] | None = None,
        arena: bool | None = None,
    ) -> None:
        assert interaction.guild_id is not None
        # Left out, the share stays as it was (changing the interval keeps the mix).
        share: dict[str, object] = {} if compare is None else {"feed_compare_percent": compare}
        if arena is not None:
            share["feed_arena"] = arena
        await retry_on_disconnect(
            lambda: update_guild_settings(
                engine,
                interaction.guild_id,
                feed_channel_id=channel.id,
                feed_interval_minutes=minutes,
                **share,
            )
        )
        if compare is None:
            current = await retry_on_disconnect(
                lambda: get_guild_settings(engine, interaction.guild_id)
            )
            compare = (current.feed_compare_percent if current else None) or 0
        mix = f", {compare}% of posts comparisons" if compare else ""
        if arena:
            mix += ", an arena round always going"
        await interaction.response.send_message(
            f"Rating feed: {channel.mention} every {minutes} min{mix}.", ephemeral=True
        )

    @admin.command(
        name="bestof",
        description="Candidates /dream renders per image when a member asks for none.",
    )
    @app_commands.describe(
        candidates="The community's predictor posts the best of this many (1: off)."
    )
    async def bestof(interaction: discord.Interaction, candidates: int) -> None:
        assert interaction.guild_id is not None
        guild_id = interaction.guild_id
        limit = max_best_of
        if not 1 <= candidates <= limit:
            raise DreamrateError(f"candidates: must be between 1 and {limit}, got {candidates}.")
        if (
            candidates > 1
            and await retry_on_disconnect(lambda: active_predictor_path(engine)) is None
        ):
            raise DreamrateError(
                "candidates: no predictor is active to pick the best (a maintainer trains "
                "one with `dreamrate train`)."
            )
        await retry_on_disconnect(
            lambda: update_guild_settings(engine, guild_id, best_of=candidates)
        )
        said = (
            f"/dream now renders {candidates} candidates per image and posts the best"
            if candidates > 1
            else "/dream renders one image per image asked for"
        )
        await interaction.response.send_message(
            f"{said} (members may still ask otherwise).", ephemeral=True
        )

    @admin.command(name="ban", description="Ban a member from generating and rating.")
    async def ban(interaction: discord.Interaction, member: discord.User) -> None:
        assert interaction.guild_id is not None
        await retry_on_disconnect(
            lambda: set_banned(engine, interaction.guild_id, member.id, True, name=member.name)
        )
        await interaction.response.send_message(
            f"{member.mention} is banned from generating and rating in this server.",
            ephemeral=True,
        )
        await record(interaction, "ban", f"member {member.id}")

    @admin.command(name="unban", description="Lift a ban.")
    async def unban(interaction: discord.Interaction, member: discord.User) -> None:
        assert interaction.guild_id is not None
        await retry_on_disconnect(
            lambda: set_banned(engine, interaction.guild_id, member.id, False, name=member.name)
        )
        await interaction.response.send_message(
            f"{member.mention} may generate and rate again.", ephemeral=True
        )
        await record(interaction, "unban", f"member {member.id}")

    @admin.command(
        name="remove",
        description="Remove an image (deletes its message, keeps it out of datasets).",
    )
    async def remove(interaction: discord.Interaction, message_id: str) -> None:
        if not message_id.isdigit():
            raise DreamrateError("message_id: give the image message's id (a number).")
        assert interaction.guild_id is not None
        image = await retry_on_disconnect(
            lambda: remove_image(engine, interaction.guild_id, int(message_id))
        )
        if image is None:
            raise DreamrateError(f"Message {message_id} is not a generated image of this server.")
        for channel_id, shown_as in image.messages:  # its own message and every repost
            partial = client.get_partial_messageable(channel_id).get_partial_message(shown_as)
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                await partial.delete()
        await interaction.response.send_message(f"Image {image.id} removed.", ephemeral=True)
        await record(interaction, "remove", f"image {image.id}", messages=len(image.messages))

    @admin.command(
        name="dismiss", description="Close an image's reports as reviewed (it stays; it was fine)."
    )
    async def dismiss(interaction: discord.Interaction, message_id: str) -> None:
        if not message_id.isdigit():
            raise DreamrateError("message_id: give the image message's id (a number).")
        assert interaction.guild_id is not None
        closed = await retry_on_disconnect(
            lambda: dismiss_reports(engine, interaction.guild_id, int(message_id))
        )
        if closed is None:
            raise DreamrateError(f"Message {message_id} is not a generated image of this server.")
        await interaction.response.send_message(
            f"Closed {closed} report(s); the image stays.", ephemeral=True
        )
        await record(interaction, "dismiss", f"message {message_id}", reports=closed)

    @admin.command(name="flags", description="Images members reported with the flag emoji.")
    async def flags(interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        found = await retry_on_disconnect(lambda: open_flags(engine, interaction.guild_id))
        if not found:
            await interaction.response.send_message("No open reports.", ephemeral=True)
            return
        guild = interaction.guild_id
        lines = [
            f"image {f.image_id}: {f.reports} report(s) https://discord.com/channels/{guild}/{f.channel_id}/{f.message_id}"
            for f in found
        ]
        await interaction.response.send_message(fit_message("\n".join(lines)), ephemeral=True)

    @admin.command(name="models", description="The models /dream can use, registered ones too.")
    async def models(interaction: discord.Interaction) -> None:
        specs = await retry_on_disconnect(lambda: list_models(engine))
        offered = set(offered_models(tree))
        lines = [f"configured: {', '.join(sorted(offered - {s.name for s in specs})) or '-'}"]
        for spec in specs:
            what = f"LoRA on {spec.base}" if spec.kind == "lora" else "diffusers model"
            later = "" if spec.name in offered else " (in /dream's list after the bot restarts)"
            lines.append(f"{spec.name}: {what}, {spec.path}{later}")
        if not specs:
            lines.append("No registered models (`dreamrate models add`).")
        await interaction.response.send_message(fit_message("\n".join(lines)), ephemeral=True)

    tree.add_command(admin)
