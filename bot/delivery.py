"""Delivering finished jobs: one message per image with the rating emoji, and live progress lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import discord

from dreamrate.bot.embeds import image_embed, job_status_text, job_view
from dreamrate.bot.loops import every
from dreamrate.bot.publisher import attachment_stem
from dreamrate.bot.uploads import DEFAULT_UPLOAD_LIMIT, image_file
from dreamrate.community.posts import OWN
from dreamrate.core.errors import DreamrateError
from dreamrate.db.models import JobStatus
from dreamrate.db.users import user_name
from dreamrate.generation.store import ImageUnreadable

if TYPE_CHECKING:
    from dreamrate.bot.publisher import Publisher
    from dreamrate.community.posts import PostRepository
    from dreamrate.db.models import Image
    from dreamrate.generation.queue import JobRecord, JobRepository
    from dreamrate.generation.store import ImageStore

__all__ = ["MAX_DELIVERY_TRIES", "PROGRESS_EVERY_S", "Delivery"]

logger = logging.getLogger(__name__)

#: Least time between two edits of a job's progress line (Discord rate-limits edits).
PROGRESS_EVERY_S = 2.0
#: Attempts at a job whose channel refuses it (403) or is gone (404) before it fails: each
#: refusal counts towards the 10,000 invalid requests that get an IP banned.
MAX_DELIVERY_TRIES = 3
#: Seconds between sweeps that drop expired interaction tokens.
TOKEN_SWEEP_EVERY_S = 60.0


def _why(exc: Exception) -> str:
    if isinstance(exc, discord.HTTPException):
        return f"{exc.status} {exc.text or type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    if isinstance(exc, DreamrateError):  # the image store's one-line reasons
        return exc.message
    return type(exc).__name__


class Delivery:
    """Posts finished jobs and refreshes the progress of running ones.

    Follow-ups go through the interaction's webhook while its token is valid, plain channel
    messages after it expires; the token is re-read before each image so a job whose token
    expires mid-way falls back cleanly.

    Parameters
    ----------
    client
        The connected Discord client.
    repo
        The generation queue.
    publisher
        Posts each image exactly once, with the rating emoji.
    store
        The image store the worker wrote the images to.
    interval
        Seconds between delivery passes.
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        repo: JobRepository,
        publisher: Publisher,
        store: ImageStore,
        interval: float = 0.5,
    ) -> None:
        self.client = client
        self.repo = repo
        self.publisher = publisher
        self.posts: PostRepository = publisher.posts
        self.store = store
        self.interval = interval
        self._last_progress: dict[int, tuple[float, str]] = {}
        self._failures: dict[int, int] = {}  # job -> failed attempts
        self._next_sweep = 0.0
        self._retry_at: dict[int, float] = {}  # job -> monotonic time of the next attempt

    async def run_forever(self) -> None:
        """|coro| Deliver every ``interval`` seconds until the client closes."""
        await every(self.client, self.interval, self.deliver_once, "delivery pass")

    async def deliver_once(self) -> None:
        """|coro| Post finished jobs (one message per image) and refresh progress lines.

        Each job is delivered on its own: one that cannot be delivered now waits its turn
        again later and never holds up the others; channels are served concurrently.
        """
        now = time.monotonic()
        if now >= self._next_sweep:  # expired tokens are secrets nothing can use
            self._next_sweep = now + TOKEN_SWEEP_EVERY_S
            await self.posts.forget_expired_tokens()
        by_channel: dict[int, list[JobRecord]] = {}
        for job_id in await self.posts.undelivered():
            if self._retry_at.get(job_id, 0.0) > now:
                continue
            job = await self.repo.get(job_id)
            if job is not None:
                by_channel.setdefault(job.channel_id or 0, []).append(job)
        # Discord's limits are per channel: channels are served side by side, each in order.
        await asyncio.gather(*(self._deliver_in_order(jobs) for jobs in by_channel.values()))

    async def _deliver_in_order(self, jobs: list[JobRecord]) -> None:
        for job in jobs:
            try:
                if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                    await self._show_progress(job)
                else:
                    await self._deliver(job)
            except Exception as exc:
                await self._failed(job, exc)

    async def _failed(self, job: JobRecord, exc: Exception) -> None:
        """A delivery attempt failed: wait and try again, or give up when it cannot work."""
        tries = self._failures.get(job.id, 0) + 1
        self._failures[job.id] = tries
        # A store that is down is waited for; an image missing from it is not coming back.
        lasting = isinstance(exc, discord.Forbidden | discord.NotFound | OSError | ImageUnreadable)
        if lasting and tries >= MAX_DELIVERY_TRIES:
            await self._give_up(job, _why(exc))
            return
        pause = min(2.0**tries, 60.0)
        self._retry_at[job.id] = time.monotonic() + pause
        logger.warning(
            "job %s: delivery failed (%s); trying again in %.0f s", job.id, _why(exc), pause
        )

    async def _give_up(self, job: JobRecord, why: str) -> None:
        posted = sum(1 for image in await self.repo.images(job.id) if image.discord_message_id)
        reason = f"could not post its images ({why}); {posted} of {job.num_images} posted"
        logger.error("job %s: %s", job.id, reason)
        token = await self.posts.interaction_token(job.id)  # dropped by fail_delivery
        await self.posts.fail_delivery(job.id, reason)
        self._forget(job.id)
        failed = await self.repo.get(job.id)
        if token is not None and failed is not None:
            with contextlib.suppress(discord.HTTPException):  # tell the requester the truth
                await self._webhook(token).edit_message(
                    "@original",
                    content=job_status_text(failed),
                    view=job_view(job.id, running=False),
                )

    def _forget(self, job_id: int) -> None:
        self._last_progress.pop(job_id, None)
        self._failures.pop(job_id, None)
        self._retry_at.pop(job_id, None)

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
        token = await self.posts.interaction_token(job.id)
        if token is None:
            return
        self._last_progress[job.id] = (now, text)
        with contextlib.suppress(discord.HTTPException):
            await self._webhook(token).edit_message("@original", content=text)

    async def _deliver(self, job: JobRecord) -> None:
        # Images first: the status line says "done, below" only once they are.
        if job.status is JobStatus.DONE:
            await self._post_images(job)
        token = await self.posts.interaction_token(job.id)
        if token is not None:
            with contextlib.suppress(discord.HTTPException):
                await self._webhook(token).edit_message(
                    "@original", content=job_status_text(job), view=job_view(job.id, running=False)
                )
        await self.posts.mark_delivered(job.id)
        self._forget(job.id)

    async def _post_images(self, job: JobRecord) -> None:
        requester = await user_name(self.repo.engine, job.requester_id) or "someone"
        channel_id = job.channel_id or 0
        channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
        guild = getattr(channel, "guild", None)
        limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
        for image in await self.repo.images(job.id):
            if (
                image.flagged
                or image.passed_over
                or image.removed
                or image.discord_message_id is not None
            ):
                continue
            # Read before the post is begun: a store that is down delays it, nothing more.
            data = await asyncio.to_thread(self.store.read, image.path)
            await self.publisher.post_once(
                channel_id,
                image.id,
                OWN,
                partial(self._send, job, image, data, channel, limit, requester),
            )

    async def _send(
        self,
        job: JobRecord,
        image: Image,
        data: bytes,
        channel: Any,
        limit: int,
        requester: str,
        nonce: str,
    ) -> discord.Message:
        """One image's own message: a follow-up while the interaction's token is valid (it
        is re-read before each image), a plain channel message after it expires."""
        file = image_file(data, attachment_stem(job.id, image.index, nonce), limit)
        embed = image_embed(job, image.index, image.seed, requester)
        token = await self.posts.interaction_token(job.id)
        if token is not None:
            return await self._webhook(token).send(file=file, embed=embed, wait=True)
        return await channel.send(file=file, embed=embed)  # type: ignore[no-any-return]
