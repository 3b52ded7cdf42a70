"""The slash commands.

No ``from __future__ import annotations`` here: discord.py reads the option
types, with ranges taken from settings, from the callbacks' annotations at runtime.
"""

import io
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from dreamrate.bot.embeds import fit_message
from dreamrate.core.errors import DreamrateError
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.generation.request import MAX_SEED, RequestInput
from dreamrate.ratings.privacy import erase, export_mine, set_opted_out
from dreamrate.ratings.stats import rating_stats

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.bot.arena import Arena
    from dreamrate.bot.dreams import DreamRequests
    from dreamrate.bot.feed import RatingPosts
    from dreamrate.core.settings import GenerationSettings
    from dreamrate.generation.queue import JobRepository

__all__ = ["register_commands"]

logger = logging.getLogger(__name__)


def register_commands(
    tree: app_commands.CommandTree,
    *,
    generation: "GenerationSettings",
    engine: "AsyncEngine",
    repo: "JobRepository",
    dreams: "DreamRequests",
    posts: "RatingPosts",
    rebaseline: "Callable[[], None]",
    arena: "Arena | None" = None,
) -> None:
    """Add the members' commands to ``tree``, with option ranges from the settings.

    ``rebaseline`` asks for a backfill after an erase or an opt-in, which takes the
    member's baseline (what they left on Discord never counts)."""
    g = generation

    # Generation and rating belong to a server's community: guild-only (not in DMs).
    @tree.command(
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
    @app_commands.choices(
        model=[app_commands.Choice(name=m[-100:], value=m) for m in dreams.limits.models][:25]
    )
    async def dream(
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
        await dreams.dream(
            interaction,
            RequestInput(
                prompt=prompt,
                negative=negative,
                seed=seed,
                steps=steps,
                guidance=guidance,
                images=images,
                model=model,
                best_of=best_of,
            ),
            size,
        )

    @tree.command(name="job", description="Show the full parameters and seed of a job.")
    @app_commands.guild_only()
    async def job(interaction: discord.Interaction, id: int) -> None:
        record = await retry_on_disconnect(lambda: repo.get(id))
        if record is None or record.guild_id != interaction.guild_id:
            raise DreamrateError(f"There is no job {id}.")  # other guilds' jobs stay theirs
        text = (
            f"Job {record.id}: {discord.utils.escape_markdown(record.prompt)}\n"
            f"negative: {record.negative_prompt or '-'} · seed {record.seed} · {record.width}x{record.height} · "
            f"{record.steps} steps · guidance {record.guidance:g} · {record.num_images} image(s) · {record.status.value}"
        )
        await interaction.response.send_message(fit_message(text), ephemeral=True)

    privacy = app_commands.Group(name="privacy", description="Your data: opt out, erase, export.")

    @privacy.command(name="optout", description="Stop recording my ratings.")
    async def optout(interaction: discord.Interaction) -> None:
        await retry_on_disconnect(
            lambda: set_opted_out(engine, interaction.user.id, True, name=interaction.user.name)
        )
        await interaction.response.send_message(
            "Your reactions will no longer be recorded.", ephemeral=True
        )

    @privacy.command(name="optin", description="Record my ratings again.")
    async def optin(interaction: discord.Interaction) -> None:
        changed = await retry_on_disconnect(
            lambda: set_opted_out(engine, interaction.user.id, False, name=interaction.user.name)
        )
        if changed:
            rebaseline()
        await interaction.response.send_message(
            "Your reactions are recorded again, from now on.", ephemeral=True
        )

    @privacy.command(
        name="erase", description="Erase all my ratings; they are kept out of every dataset."
    )
    async def erase_cmd(interaction: discord.Interaction) -> None:
        erased = await retry_on_disconnect(lambda: erase(engine, interaction.user.id))
        rebaseline()  # soon: the reactions they leave on Discord become tombstones
        await interaction.response.send_message(str(erased), ephemeral=True)

    @privacy.command(name="export", description="Send me my data as a JSON file.")
    async def export(interaction: discord.Interaction) -> None:
        data = json.dumps(
            await retry_on_disconnect(lambda: export_mine(engine, interaction.user.id)),
            indent=2,
            ensure_ascii=False,
        )
        file = discord.File(io.BytesIO(data.encode()), filename="dreamrate-my-data.json")
        await interaction.response.send_message("Your data:", file=file, ephemeral=True)

    tree.add_command(privacy)

    @tree.command(name="stats", description="Your ratings, the server's totals and the top raters.")
    @app_commands.guild_only()
    async def stats(interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        found = await retry_on_disconnect(
            lambda: rating_stats(engine, interaction.user.id, interaction.guild_id)
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

    @tree.command(
        name="rate",
        description="Post the images that most need ratings here, with the rating emoji.",
    )
    @app_commands.describe(count="How many images (1-10).")
    @app_commands.guild_only()
    async def rate(
        interaction: discord.Interaction, count: app_commands.Range[int, 1, 10] = 3
    ) -> None:
        await dreams.check(interaction, "/rate")
        assert interaction.guild_id is not None and interaction.channel_id is not None
        wait = posts.cooldown(interaction.guild_id, interaction.user.id)
        if wait:
            raise DreamrateError(f"You can use /rate again in {max(1, round(wait))} s.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        chosen = await retry_on_disconnect(
            lambda: posts.images_to_rate(count, interaction.guild_id)
        )
        if not chosen:
            await interaction.followup.send("No images to rate yet: try /dream!", ephemeral=True)
            return
        posted, already = await posts.post(interaction.channel_id, chosen, kind="rate")
        text = f"Posted {len(posted)} image(s) to rate."
        if already:
            links = " ".join(
                f"https://discord.com/channels/{interaction.guild_id}/{interaction.channel_id}/{m}"
                for m in already
            )
            text += f" Already here, waiting for your rating: {links}"
        await interaction.followup.send(fit_message(text), ephemeral=True)

    @tree.command(
        name="compare",
        description="Post pairs of images here: choose the one you prefer with ⬅️ or ➡️.",
    )
    @app_commands.describe(count="How many pairs (1-5).")
    @app_commands.guild_only()
    async def compare(
        interaction: discord.Interaction, count: app_commands.Range[int, 1, 5] = 1
    ) -> None:
        await dreams.check(interaction, "/compare")
        assert interaction.guild_id is not None and interaction.channel_id is not None
        wait = posts.cooldown(interaction.guild_id, interaction.user.id)
        if wait:
            raise DreamrateError(f"You can use /compare again in {max(1, round(wait))} s.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        pairs = await retry_on_disconnect(
            lambda: posts.pairs_to_compare(
                count, interaction.guild_id, interaction.channel_id, interaction.user.id
            )
        )
        if not pairs:
            await interaction.followup.send(
                "No pairs to compare yet (you judged them all, or there are fewer than two "
                "images): try /dream!",
                ephemeral=True,
            )
            return
        posted = await posts.compare(interaction.channel_id, pairs, kind="compare")
        await interaction.followup.send(
            f"Posted {len(posted)} pair(s): react {posts.scale.choice_emojis[0]} or "
            f"{posts.scale.choice_emojis[1]} for the one you prefer, "
            f"{posts.scale.choice_emojis[2]} if you can't choose.",
            ephemeral=True,
        )

    if arena is not None:

        @tree.command(
            name="arena",
            description="Two models draw one prompt with one seed; choose the better, blind.",
        )
        @app_commands.describe(prompt="What both models draw (a stock prompt if empty).")
        @app_commands.guild_only()
        async def arena_cmd(interaction: discord.Interaction, prompt: str | None = None) -> None:
            await arena.start(interaction, prompt)

    @tree.error
    async def on_error(
        interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = getattr(error, "original", error)
        message = cause.message if isinstance(cause, DreamrateError) else None
        if message is None and isinstance(
            error, app_commands.TransformerError | app_commands.CheckFailure
        ):
            message = str(error)
        if message is None:
            logger.error(
                "command %s failed",
                interaction.command and interaction.command.name,
                exc_info=cause,
            )
            message = "Something went wrong on our side; the moderators can see the log."
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)


def offer_models(tree: app_commands.CommandTree, models: Iterable[str]) -> None:
    """Set the choices of ``/dream``'s ``model`` option (Discord takes at most 25), before the
    commands are synced. discord.py has no public setter for a parameter's choices."""
    command = tree.get_command("dream")
    assert isinstance(command, app_commands.Command)
    command._params["model"].choices = [
        app_commands.Choice(name=m[-100:], value=m) for m in list(models)[:25]
    ]


def offered_models(tree: app_commands.CommandTree) -> list[str]:
    """The ``model`` choices ``/dream`` offers now."""
    command = tree.get_command("dream")
    assert isinstance(command, app_commands.Command)
    return [str(c.value) for c in command._params["model"].choices]
