"""Delivering finished jobs: one message per image with the rating emoji, and live progress lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import discord

from dreamrate.bot.embeds import image_embed, job_status_text, job_view
from dreamrate.bot.loops import every
from dreamrate.bot.uploads import DEFAULT_UPLOAD_LIMIT, image_file
from dreamrate.db.models import JobStatus
from dreamrate.db.users import user_name

if TYPE_CHECKING:
    from dreamrate.generation.deliveries import DeliveryRepository
    from dreamrate.generation.queue import JobRecord, JobRepository
    from dreamrate.ratings.scale import RatingScale

__all__ = ["PROGRESS_EVERY_S", "Delivery"]

logger = logging.getLogger(__name__)

#: Least time between two edits of a job's progress line (Discord rate-limits edits).
PROGRESS_EVERY_S = 2.0


class Delivery:
    """Posts finished jobs and refreshes the progress of running ones.

    Follow-ups go through the interaction's webhook while its token is valid, plain channel
    messages after it expires; the token is re-read before each image so a job whose token
    expires mid-way falls back cleanly.

    Parameters
    ----------
    client
        The connected Discord client.
    repo, deliveries
        The generation queue and the delivery bookkeeping.
    scale
        The rating emoji seeded under each image.
    images_dir
        Where the image store keeps the files.
    interval
        Seconds between delivery passes.
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        repo: JobRepository,
        deliveries: DeliveryRepository,
        scale: RatingScale,
        images_dir: Path,
        interval: float = 0.5,
    ) -> None:
        self.client = client
        self.repo = repo
        self.deliveries = deliveries
        self.scale = scale
        self.images_dir = images_dir
        self.interval = interval
        self._last_progress: dict[int, tuple[float, str]] = {}

    async def run_forever(self) -> None:
        """|coro| Deliver every ``interval`` seconds until the client closes."""
        await every(self.client, self.interval, self.deliver_once, "delivery pass")

    async def deliver_once(self) -> None:
        """|coro| Post finished jobs (one message per image) and refresh progress lines."""
        for job_id in await self.deliveries.undelivered():
            job = await self.repo.get(job_id)
            if job is None:
                continue
            if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                await self._show_progress(job)
            else:
                await self._deliver(job)

    def _webhook(self, token: str) -> discord.Webhook:
        assert self.client.application_id is not None
        return discord.Webhook.partial(self.client.application_id, token, client=self.client)

    async def _show_progress(self, job: JobRecord) -> None:
        last = self._last_progress.get(job.id)
        now = asyncio.get_running_loop().time()
        if last is not None and now - last[0] < PROGRESS_EVERY_S:
            return  # throttled before any query: this runs every delivery pass
        info = await self.repo.queue_info(job.id) if job.status is JobStatus.QUEUED else None
        text = job_status_text(job, info)
        if last is not None and last[1] == text:
            return
        token = await self.deliveries.interaction_token(job.id)
        if token is None:
            return
        self._last_progress[job.id] = (now, text)
        with contextlib.suppress(discord.HTTPException):
            await self._webhook(token).edit_message("@original", content=text)

    async def _deliver(self, job: JobRecord) -> None:
        token = await self.deliveries.interaction_token(job.id)
        if token is not None:
            with contextlib.suppress(discord.HTTPException):
                await self._webhook(token).edit_message(
                    "@original", content=job_status_text(job), view=job_view(job.id, running=False)
                )
        if job.status is JobStatus.DONE:
            await self._post_images(job)
        await self.deliveries.mark_delivered(job.id)
        self._last_progress.pop(job.id, None)

    async def _post_images(self, job: JobRecord) -> None:
        requester = await user_name(self.repo.engine, job.requester_id) or "someone"
        channel_id = job.channel_id or 0
        channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
        guild = getattr(channel, "guild", None)
        limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
        for image in await self.repo.images(job.id):
            if image.flagged or image.removed or image.discord_message_id is not None:
                continue
            file = image_file(
                self.images_dir / image.path, f"dreamrate-{job.id}-{image.index + 1}", limit
            )
            embed = image_embed(job, image.index, image.seed, requester)
            token = await self.deliveries.interaction_token(job.id)
            if token is not None:
                message = await self._webhook(token).send(file=file, embed=embed, wait=True)
            else:
                message = await channel.send(file=file, embed=embed)  # type: ignore[union-attr]
            await self.deliveries.mark_posted(
                image.id, message_id=message.id, channel_id=message.channel.id
            )
            partial = self.client.get_partial_messageable(message.channel.id).get_partial_message(
                message.id
            )
            for emoji in self.scale.reaction_emojis:
                await partial.add_reaction(emoji)
