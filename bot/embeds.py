"""What the bot's messages say: pure functions from records to text and embeds."""

from __future__ import annotations

import discord

from dreamrate.bot.buttons import button_id
from dreamrate.db.models import JobStatus
from dreamrate.generation.queue import JobRecord, QueueInfo

__all__ = [
    "MESSAGE_CHARS",
    "PROMPT_PREVIEW_CHARS",
    "fit_message",
    "image_embed",
    "job_status_text",
    "job_view",
    "pair_embed",
]

#: Longest text the bot sends in one message (Discord's cap is 2,000; room for a suffix).
MESSAGE_CHARS = 1900
#: Characters of the prompt shown in an image's card (the rest is in /job).
PROMPT_PREVIEW_CHARS = 1000


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit_message(text: str) -> str:
    """``text`` cut to what one Discord message may hold."""
    return _short(text, MESSAGE_CHARS)


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
    return f"Job {job.id}: failed ({_short(job.error or 'unknown error', 200)})."


def image_embed(job: JobRecord, index: int, seed: int, requester: str) -> discord.Embed:
    """The compact card under each image: prompt, seed, size, steps, job, requester."""
    embed = discord.Embed(
        description=_short(discord.utils.escape_markdown(job.prompt), PROMPT_PREVIEW_CHARS)
    )
    embed.add_field(name="seed", value=str(seed))
    embed.add_field(name="size", value=f"{job.width}x{job.height}")
    embed.add_field(name="steps", value=str(job.steps))
    embed.set_footer(text=_short(f"job {job.id} #{index + 1} · by {requester}", 200))
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
        prompt = _short(discord.utils.escape_markdown(job.prompt), 300) or "-"
        embed.add_field(
            name=_short(f"{side}: job {job.id} #{index + 1}", 256),
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
