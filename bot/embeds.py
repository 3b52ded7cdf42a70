"""What the bot's messages say: pure functions from records to text and embeds."""

from __future__ import annotations

import discord

from dreamrate.db.models import JobStatus
from dreamrate.generation.queue import JobRecord, QueueInfo

__all__ = [
    "MESSAGE_CHARS",
    "PROMPT_PREVIEW_CHARS",
    "arena_embed",
    "button_id",
    "fit_message",
    "image_embed",
    "job_status_text",
    "job_view",
    "pair_embed",
    "parse_custom_id",
    "short",
]

#: Longest text the bot sends in one message (Discord's cap is 2,000; room for a suffix).
MESSAGE_CHARS = 1900
#: Characters of the prompt shown in an image's card (the rest is in /job).
PROMPT_PREVIEW_CHARS = 1000


def short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit_message(text: str) -> str:
    """``text`` cut to what one Discord message may hold."""
    return short(text, MESSAGE_CHARS)


def job_status_text(job: JobRecord, info: QueueInfo | None = None) -> str:
    """One line for the job's reply: queue position and ETA, progress, or the outcome."""
    if job.status is JobStatus.QUEUED:
        where = f"#{info.position} in the queue" if info and info.position else "queued"
        eta = f", about {max(1, round(info.eta_seconds))} s" if info and info.eta_seconds else ""
        return f"Job {job.id}: {where}{eta}."
    if job.status is JobStatus.RUNNING:
        return f"Job {job.id}: rendering, {round(job.progress * 100)}%."
    if job.status is JobStatus.DONE:
        return (
            f"Job {job.id}: done, {job.num_images} image(s) below. Rate them with the number emoji!"
        )
    if job.status is JobStatus.CANCELLED:
        return f"Job {job.id}: cancelled."
    return f"Job {job.id}: failed ({short(job.error or 'unknown error', 200)})."


def image_embed(job: JobRecord, index: int, seed: int, requester: str) -> discord.Embed:
    """The compact card under each image: prompt, seed, size, steps, job, requester."""
    embed = discord.Embed(
        description=short(discord.utils.escape_markdown(job.prompt), PROMPT_PREVIEW_CHARS)
    )
    embed.add_field(name="seed", value=str(seed))
    embed.add_field(name="size", value=f"{job.width}x{job.height}")
    embed.add_field(name="steps", value=str(job.steps))
    embed.set_footer(text=short(f"job {job.id} #{index + 1} · by {requester}", 200))
    return embed


def pair_embed(
    left: tuple[JobRecord, int, str | None],
    right: tuple[JobRecord, int, str | None],
    emojis: tuple[str, str, str],
) -> discord.Embed:
    """The card of a comparison: which emoji means what, and each side's job, prompt and a
    link to the image's own message (to rate it, or report it with the flag)."""
    embed = discord.Embed(
        description=f"Which do you prefer? {emojis[0]} left · {emojis[1]} right · "
        f"{emojis[2]} can't choose"
    )
    for side, (job, index, link) in (("left", left), ("right", right)):
        prompt = short(discord.utils.escape_markdown(job.prompt), 300) or "-"
        embed.add_field(
            name=short(f"{side}: job {job.id} #{index + 1}", 256),
            value=f"{prompt}\n[its own post]({link})" if link else prompt,
            inline=True,
        )
    return embed


def job_view(job_id: int, *, running: bool) -> discord.ui.View:
    """Buttons under a job's reply: reroll (same settings, new seed) and, while it runs, cancel.

    Custom ids carry the job id, so the buttons work across restarts without stored views.
    """
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(label="Reroll", emoji="🎲", custom_id=button_id("reroll", job_id))
    )
    if running:
        view.add_item(
            discord.ui.Button(
                label="Cancel",
                style=discord.ButtonStyle.danger,
                custom_id=button_id("cancel", job_id),
            )
        )
    return view


def button_id(action: str, job_id: int) -> str:
    """The custom id of ``action``'s button for ``job_id``: ``dreamrate:<action>:<job>``."""
    return f"dreamrate:{action}:{job_id}"


def parse_custom_id(custom_id: str) -> tuple[str, int] | None:
    """``(action, job id)`` of one of our buttons; None for anything else."""
    parts = custom_id.split(":")
    if len(parts) != 3 or parts[0] != "dreamrate" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def arena_embed(
    emojis: tuple[str, str, str], prompt: str, names: tuple[str, str] | None = None
) -> discord.Embed:
    """An arena round's card: the prompt and which emoji means what; the models only once
    ``names`` (left, right) are given, when the round has closed."""
    text = short(discord.utils.escape_markdown(prompt), 300)
    embed = discord.Embed(
        title="Arena: which model drew it better?",
        description=f"{text}\n{emojis[0]} left · {emojis[1]} right · {emojis[2]} can't choose",
    )
    if names is None:
        embed.set_footer(text="The models are named when the round closes.")
    else:
        embed.add_field(name="left", value=short(names[0], 256), inline=True)
        embed.add_field(name="right", value=short(names[1], 256), inline=True)
        embed.set_footer(text="Round closed: later choices do not count.")
    return embed
