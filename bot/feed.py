"""Showing images again for rating: ``/rate`` and ``/compare`` post on request, the feed
posts on a timer.

What to show is the rating queue's (:class:`~dreamrate.community.rating_queue.RatingQueue`),
the posting the publisher's (:class:`~dreamrate.bot.publisher.Publisher`): exactly once,
with the emoji to rate or choose with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import discord

from dreamrate.bot.embeds import image_embed, pair_embed
from dreamrate.bot.loops import every
from dreamrate.bot.publisher import attachment_stem
from dreamrate.bot.uploads import image_file, pair_file
from dreamrate.community.guild_settings import feed_channels
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import user_name

if TYPE_CHECKING:
    from dreamrate.bot.publisher import Publisher
    from dreamrate.community.rating_queue import RatingQueue
    from dreamrate.generation.queue import JobRepository
    from dreamrate.generation.store import ImageStore

__all__ = ["FEED_CHECK_EVERY_S", "RatingPosts"]

logger = logging.getLogger(__name__)

#: How often the feed looks for channels whose interval has passed.
FEED_CHECK_EVERY_S = 30.0
#: Candidates the feed considers, so it can skip images already shown in its channel.
FEED_CANDIDATES = 5
#: An unanswered comparison send this old is looked for before the channel gets another.
RESUME_AFTER = timedelta(minutes=1)


def _own_post(guild_id: int | None, image: Any) -> str | None:
    """The link to an image's own message (where it is rated and reported)."""
    if guild_id is None or image.discord_message_id is None:
        return None
    return (
        f"https://discord.com/channels/{guild_id}/{image.discord_channel_id}/"
        f"{image.discord_message_id}"
    )


class RatingPosts:
    """Posts the images and pairs the rating queue picks, on request and in the feeds.

    Parameters
    ----------
    client
        The connected Discord client.
    queue
        What to show next.
    publisher
        Posts exactly once, with the emoji.
    repo
        Jobs (for the caption).
    store
        The image store the worker wrote the images to.
    feed_interval_minutes
        Default minutes between feed posts (a guild's own setting wins).
    rate_cooldown
        Seconds a member waits between two uses of /rate in one guild.
    reuse_within
        A repost this recent is reused rather than posted again.
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        queue: RatingQueue,
        publisher: Publisher,
        repo: JobRepository,
        store: ImageStore,
        feed_interval_minutes: int,
        rate_cooldown: float = 60.0,
        reuse_within: timedelta = timedelta(days=14),
    ) -> None:
        self.client = client
        self.queue = queue
        self.publisher = publisher
        self.posts = publisher.posts
        self.scale = publisher.scale
        self.engine = queue.engine
        self.repo = repo
        self.store = store
        self.feed_interval = timedelta(minutes=feed_interval_minutes)
        self.rate_cooldown = rate_cooldown
        self.reuse_within = reuse_within
        self._last_rate: dict[tuple[int, int], float] = {}  # (guild, member) -> monotonic

    def cooldown(self, guild_id: int, member_id: int) -> float:
        """Seconds until ``member_id`` may use /rate again in ``guild_id``; 0 starts a new turn."""
        now = time.monotonic()
        last = self._last_rate.get((guild_id, member_id))
        if last is not None and now - last < self.rate_cooldown:
            return self.rate_cooldown - (now - last)
        self._last_rate[(guild_id, member_id)] = now
        return 0.0

    async def _shown(self, image_id: int) -> tuple[Any, Any] | None:
        """An image and its job, or None when either is gone."""
        image = await retry_on_disconnect(partial(self.posts.image, image_id))
        job = (
            None
            if image is None
            else await retry_on_disconnect(partial(self.repo.get, image.job_id))
        )
        return None if image is None or job is None else (image, job)

    async def compare(
        self, channel_id: int, pairs: list[tuple[int, int]], *, kind: str
    ) -> list[int]:
        """|coro| Post each pair side by side in one message with the choice emoji
        (``kind``: ``compare`` or ``feed``); returns the new message ids. Comparisons whose
        send went unanswered a while ago are finished first: the next pair is picked afresh,
        so without that such a post would never count."""
        intent_kind = "compare" if kind == "compare" else "feed_compare"
        channel = self.client.get_partial_messageable(channel_id)
        posted = await self.publisher.recover(channel_id=channel_id, before=utcnow() - RESUME_AFTER)
        for left, right in pairs:
            a_shown, b_shown = await self._shown(left), await self._shown(right)
            if a_shown is None or b_shown is None:
                continue
            (a, a_job), (b, b_job) = a_shown, b_shown
            # Read before the post is begun: a store that is down delays it, nothing more.
            pair = await asyncio.gather(
                asyncio.to_thread(self.store.read, a.path),
                asyncio.to_thread(self.store.read, b.path),
            )

            def send(nonce: str, a=a, b=b, a_job=a_job, b_job=b_job, pair=pair) -> Any:  # type: ignore[no-untyped-def]
                return channel.send(
                    file=pair_file(*pair, f"dreamrate-compare-{a.id}-{b.id}-{nonce}"),
                    embed=pair_embed(
                        (a_job, a.index, _own_post(a_job.guild_id, a)),
                        (b_job, b.index, _own_post(b_job.guild_id, b)),
                        self.scale.choice_emojis,
                    ),
                )

            posted.append(
                await self.publisher.post_once(
                    channel_id, left, intent_kind, send, other_image_id=right
                )
            )
        return posted

    async def post(
        self, channel_id: int, image_ids: list[int], *, kind: str
    ) -> tuple[list[int], list[int]]:
        """|coro| Show images again in ``channel_id``; reactions there rate them.

        An image already reposted in this channel recently (within backfill's reach, so its
        reactions still count) is not posted again. Returns ``(new message ids, message ids
        of the recent reposts reused)``.
        """
        since = utcnow() - self.reuse_within
        recent = await retry_on_disconnect(
            partial(self.posts.recent_posts, channel_id, image_ids, since)
        )
        posted = []
        channel = self.client.get_partial_messageable(channel_id)
        for image_id in image_ids:
            shown = None if image_id in recent else await self._shown(image_id)
            if shown is None:
                continue
            image, job = shown
            requester = (
                await retry_on_disconnect(partial(user_name, self.engine, job.requester_id))
                or "someone"
            )

            data = await asyncio.to_thread(self.store.read, image.path)

            def send(nonce: str, image=image, job=job, requester=requester, data=data) -> Any:  # type: ignore[no-untyped-def]
                return channel.send(
                    file=image_file(data, attachment_stem(job.id, image.index, nonce)),
                    embed=image_embed(job, image.index, image.seed, requester),
                )

            posted.append(await self.publisher.post_once(channel_id, image_id, kind, send))
        return posted, [recent[i] for i in image_ids if i in recent]

    async def feed_forever(self) -> None:
        """|coro| Finish the posts a crash interrupted, then run :meth:`feed_once` every
        :data:`FEED_CHECK_EVERY_S` until the client closes."""
        started = utcnow()
        recovered = False

        async def step() -> None:
            nonlocal recovered
            if not recovered:  # inside the loop's error handling: a failure is tried again
                # Only what was left before this start: a send of this process is in flight.
                await self.publisher.recover(before=started)
                recovered = True
            await self.feed_once()

        await every(self.client, FEED_CHECK_EVERY_S, step, "rating feed pass")

    async def feed_once(self) -> int:
        """|coro| Post to every feed channel whose interval has passed; the number of posts."""
        posts = 0
        for guild_id, channel_id, minutes, percent in await feed_channels(self.engine):
            last, recent = await self.posts.feed_mix(channel_id)
            interval = timedelta(minutes=minutes) if minutes else self.feed_interval
            if last is not None and utcnow() - last < interval:
                continue
            # The mix: a comparison whenever the feed's recent posts hold fewer than its
            # share of them (recent only: a share turned on late does not flood the channel).
            if percent and sum(recent) * 100 < percent * (len(recent) + 1):
                try:
                    chosen_pairs = await self.queue.pairs_to_compare(
                        1, guild_id, channel_id=channel_id
                    )
                    if chosen_pairs:
                        posts += len(await self.compare(channel_id, chosen_pairs, kind="feed"))
                        continue
                except (discord.HTTPException, OSError, ValueError) as exc:
                    # One unusable feed channel (or image) never stops the others' feeds.
                    logger.warning("rating feed: no comparison in channel %s (%s)", channel_id, exc)
                    continue
            # The best few; the first one not already shown in this channel recently.
            candidates = await self.queue.images_to_rate(FEED_CANDIDATES, guild_id)
            shown = await retry_on_disconnect(
                partial(
                    self.posts.recent_posts, channel_id, candidates, utcnow() - self.reuse_within
                )
            )
            chosen = [i for i in candidates if i not in shown][:1]
            try:
                posts += len((await self.post(channel_id, chosen, kind="feed"))[0])
            except (discord.HTTPException, OSError, ValueError) as exc:
                # One unusable feed channel (or image) never stops the others' feeds.
                logger.warning("rating feed: cannot post in channel %s (%s)", channel_id, exc)
        return posts
