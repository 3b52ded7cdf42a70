"""Showing images again for rating: ``/rate`` posts on request, the feed posts on a timer."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from dreamrate.aesthetic.select import select_images_to_rate, select_pairs_to_compare
from dreamrate.bot.embeds import image_embed, pair_embed
from dreamrate.bot.loops import every
from dreamrate.bot.posting import attachment_stem, find_posted
from dreamrate.bot.uploads import image_file, pair_file
from dreamrate.community.guild_settings import feed_channels
from dreamrate.db.pending import begin_post, drop_post, pending_post, pending_reposts, touch_post
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import user_name
from dreamrate.ratings.posts import feed_mix, recent_posts, record_comparison, record_post

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.aesthetic.active import ActivePredictor
    from dreamrate.generation.deliveries import DeliveryRepository
    from dreamrate.generation.queue import JobRepository
    from dreamrate.ratings.scale import RatingScale

__all__ = ["FEED_CHECK_EVERY_S", "RatingPosts"]

logger = logging.getLogger(__name__)
#: A comparison intent's kind -> the kind of the comparison post it becomes.
COMPARISON_KINDS = {"compare": "compare", "feed_compare": "feed", "arena": "arena"}

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
    """Picks images that most need ratings and posts them with the rating emoji.

    Parameters
    ----------
    client
        The connected Discord client.
    engine
        The database.
    repo, deliveries
        Jobs (for the caption) and images (for the file).
    scale
        The rating emoji seeded under each post.
    images_dir
        Where the image store keeps the files.
    predictor
        The active predictor, for active selection.
    feed_interval_minutes
        Default minutes between feed posts (a guild's own setting wins).
    rate_cooldown
        Seconds a member waits between two uses of /rate in one guild.
    reuse_within
        A repost this recent is shown again by link instead of being posted again.
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        engine: AsyncEngine,
        repo: JobRepository,
        deliveries: DeliveryRepository,
        scale: RatingScale,
        images_dir: Path,
        predictor: ActivePredictor,
        feed_interval_minutes: int,
        rate_cooldown: float = 60.0,
        reuse_within: timedelta = timedelta(days=14),
        seed: bool = True,
    ) -> None:
        self.client = client
        self.engine = engine
        self.repo = repo
        self.deliveries = deliveries
        self.scale = scale
        self.images_dir = images_dir
        self.predictor = predictor
        self.feed_interval = timedelta(minutes=feed_interval_minutes)
        self.rate_cooldown = rate_cooldown
        self.seed = seed
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

    async def images_to_rate(self, count: int, guild_id: int) -> list[int]:
        """|coro| ``guild_id``'s image ids for /rate and the feed: active selection once a
        predictor is active."""
        predictor = await self.predictor.get()
        return await retry_on_disconnect(
            partial(select_images_to_rate, self.engine, count, predictor, guild_id)
        )

    async def _post_once(
        self,
        channel_id: int,
        what: tuple[int, int | None, str],
        send: Callable[[str], Awaitable[discord.Message]],
        record: Callable[..., Awaitable[None]],
        emojis: tuple[str, ...],
    ) -> int:
        """|coro| Post once: the intent (``what``: image, the other image of a pair or None,
        intent kind) is written before the message is sent with the intent's nonce in its
        attachment's name, and cleared when ``record(message_id=, nonce=)`` stores it. An
        earlier attempt that sent without hearing back is found by its nonce instead of
        posting again. Returns the message id."""
        image_id, other, kind = what
        intent = await retry_on_disconnect(
            partial(pending_post, self.engine, image_id, channel_id, kind, other_image_id=other)
        )
        message: discord.Message | None = None
        if intent is not None:
            message = await find_posted(self.client, channel_id, intent.nonce, intent.created_at)
            if message is None:
                await retry_on_disconnect(partial(touch_post, self.engine, intent.nonce))
            nonce = intent.nonce
        else:
            # The row is written first: a message is never left whose reactions don't count.
            nonce = await retry_on_disconnect(
                partial(begin_post, self.engine, image_id, channel_id, kind, other_image_id=other)
            )
        if message is None:
            try:
                message = await send(nonce)
            except discord.HTTPException as exc:
                if exc.status < 500:  # refused outright: nothing was posted, nothing to find
                    await retry_on_disconnect(partial(drop_post, self.engine, nonce))
                raise
        await retry_on_disconnect(partial(record, message_id=message.id, nonce=nonce))
        for emoji in emojis if self.seed else ():  # a crash may have cut seeding short
            await message.add_reaction(emoji)
        return message.id

    async def pairs_to_compare(
        self, count: int, guild_id: int, channel_id: int, member_id: int | None = None
    ) -> list[tuple[int, int]]:
        """|coro| Pairs of ``guild_id``'s images for /compare (by ``member_id``) and the feed,
        none already compared in ``channel_id`` recently (that post is still open)."""
        predictor = await self.predictor.get()
        return await retry_on_disconnect(
            partial(
                select_pairs_to_compare,
                self.engine,
                count,
                predictor,
                guild_id,
                member_id,
                channel_id=channel_id,
                since=utcnow() - self.reuse_within,
            )
        )

    async def compare(
        self, channel_id: int, pairs: list[tuple[int, int]], *, kind: str
    ) -> list[int]:
        """|coro| Post each pair side by side in one message with the choice emoji
        (``kind``: ``compare`` or ``feed``); returns the new message ids. Like every post, the
        intent is written first, so a crash never posts a pair twice."""
        intent_kind = "compare" if kind == "compare" else "feed_compare"
        channel = self.client.get_partial_messageable(channel_id)
        posted = await self.resume_comparisons(channel_id)
        for left, right in pairs:
            shown = []
            for image_id in (left, right):
                image = await retry_on_disconnect(partial(self.deliveries.image, image_id))
                job = (
                    None
                    if image is None
                    else await retry_on_disconnect(partial(self.repo.get, image.job_id))
                )
                if image is not None and job is not None:
                    shown.append((image, job))
            if len(shown) < 2:
                continue
            (a, a_job), (b, b_job) = shown

            def send(nonce: str, a=a, b=b, a_job=a_job, b_job=b_job) -> Any:  # type: ignore[no-untyped-def]
                return channel.send(
                    file=pair_file(
                        self.images_dir / a.path,
                        self.images_dir / b.path,
                        f"dreamrate-compare-{a.id}-{b.id}-{nonce}",
                    ),
                    embed=pair_embed(
                        (a_job, a.index, _own_post(a_job.guild_id, a)),
                        (b_job, b.index, _own_post(b_job.guild_id, b)),
                        self.scale.choice_emojis,
                    ),
                )

            posted.append(
                await self._post_once(
                    channel_id,
                    (left, right, intent_kind),
                    send,
                    partial(
                        record_comparison,
                        self.engine,
                        pair=(left, right),
                        channel_id=channel_id,
                        kind=kind,
                    ),
                    self.scale.choice_reactions,
                )
            )
        return posted

    async def resume_comparisons(self, channel_id: int) -> list[int]:
        """|coro| Comparisons in ``channel_id`` whose send went unanswered a while ago (a 5xx,
        a crash): recorded if the message went out after all, forgotten if not. The next
        pair is picked afresh, so without this such a post would never count. Returns the
        messages recorded."""
        found_ids = []
        cutoff = utcnow() - RESUME_AFTER
        for nonce, left, right, channel, kind, created_at in await retry_on_disconnect(
            partial(pending_reposts, self.engine)
        ):
            if channel != channel_id or right is None or created_at > cutoff:
                continue  # another channel, a single image, or a send still in flight
            found = await find_posted(self.client, channel_id, nonce, created_at)
            if found is None:
                await retry_on_disconnect(partial(drop_post, self.engine, nonce))
                continue
            await retry_on_disconnect(
                partial(
                    record_comparison,
                    self.engine,
                    message_id=found.id,
                    pair=(left, right),
                    channel_id=channel_id,
                    kind=COMPARISON_KINDS.get(kind, "feed"),
                    nonce=nonce,
                )
            )
            for emoji in self.scale.choice_reactions if self.seed else ():
                await found.add_reaction(emoji)
            found_ids.append(found.id)
        return found_ids

    async def post(
        self, channel_id: int, image_ids: list[int], *, kind: str
    ) -> tuple[list[int], list[int]]:
        """|coro| Show images again in ``channel_id``; reactions there rate them.

        An image already reposted in this channel recently (within backfill's reach, so its
        reactions still count) is not posted again. Returns ``(new message ids, message ids
        of the recent reposts reused)``.
        """
        recent = await retry_on_disconnect(
            partial(recent_posts, self.engine, channel_id, image_ids, utcnow() - self.reuse_within)
        )
        posted = []
        channel = self.client.get_partial_messageable(channel_id)
        for image_id in image_ids:
            image = (
                None
                if image_id in recent
                else await retry_on_disconnect(partial(self.deliveries.image, image_id))
            )
            job = (
                None
                if image is None
                else await retry_on_disconnect(partial(self.repo.get, image.job_id))
            )
            if image is None or job is None:
                continue
            requester = (
                await retry_on_disconnect(partial(user_name, self.engine, job.requester_id))
                or "someone"
            )

            def send(nonce: str, image=image, job=job, requester=requester) -> Any:  # type: ignore[no-untyped-def]
                return channel.send(
                    file=image_file(
                        self.images_dir / image.path, attachment_stem(job.id, image.index, nonce)
                    ),
                    embed=image_embed(job, image.index, image.seed, requester),
                )

            posted.append(
                await self._post_once(
                    channel_id,
                    (image_id, None, kind),
                    send,
                    partial(
                        record_post,
                        self.engine,
                        image_id=image_id,
                        channel_id=channel_id,
                        kind=kind,
                    ),
                    self.scale.reaction_emojis,
                )
            )
        return posted, [recent[i] for i in image_ids if i in recent]

    async def feed_forever(self) -> None:
        """|coro| Finish reposts a crash interrupted, then run :meth:`feed_once` every
        :data:`FEED_CHECK_EVERY_S` until the client closes."""
        recovered = False

        async def step() -> None:
            nonlocal recovered
            if not recovered:  # inside the loop's error handling: a failure is tried again
                await self.recover()
                recovered = True
            await self.feed_once()

        await every(self.client, FEED_CHECK_EVERY_S, step, "rating feed pass")

    async def recover(self) -> int:
        """|coro| Reposts whose message went out but was not recorded (a crash in between)
        are recorded now; those never sent are forgotten. Returns how many were recorded."""
        recorded = 0
        for nonce, image_id, other_id, channel_id, kind, created_at in await retry_on_disconnect(
            partial(pending_reposts, self.engine)
        ):
            try:
                found = await find_posted(self.client, channel_id, nonce, created_at)
            except discord.HTTPException as exc:
                logger.warning(
                    "repost %s: cannot look in channel %s (%s)", nonce, channel_id, exc.status
                )
                continue
            if found is None:
                await drop_post(self.engine, nonce)
                continue
            if other_id is not None:
                await record_comparison(
                    self.engine,
                    message_id=found.id,
                    pair=(image_id, other_id),
                    channel_id=channel_id,
                    kind=COMPARISON_KINDS.get(kind, "feed"),
                    nonce=nonce,
                )
                recorded += 1
                continue
            await record_post(
                self.engine,
                message_id=found.id,
                image_id=image_id,
                channel_id=channel_id,
                kind=kind,
                nonce=nonce,
            )
            recorded += 1
        return recorded

    async def feed_once(self) -> int:
        """|coro| Post to every feed channel whose interval has passed; the number of posts."""
        posts = 0
        for guild_id, channel_id, minutes, percent in await feed_channels(self.engine):
            last, recent = await feed_mix(self.engine, channel_id)
            interval = timedelta(minutes=minutes) if minutes else self.feed_interval
            if last is not None and utcnow() - last < interval:
                continue
            # The mix: a comparison whenever the feed's recent posts hold fewer than its
            # share of them (recent only: a share turned on late does not flood the channel).
            if percent and sum(recent) * 100 < percent * (len(recent) + 1):
                try:
                    chosen_pairs = await self.pairs_to_compare(1, guild_id, channel_id)
                    if chosen_pairs:
                        posts += len(await self.compare(channel_id, chosen_pairs, kind="feed"))
                        continue
                except (discord.HTTPException, OSError, ValueError) as exc:
                    # One unusable feed channel (or image) never stops the others' feeds.
                    logger.warning("rating feed: no comparison in channel %s (%s)", channel_id, exc)
                    continue
            # The best few; the first one not already shown in this channel recently.
            candidates = await self.images_to_rate(FEED_CANDIDATES, guild_id)
            shown = await retry_on_disconnect(
                partial(
                    recent_posts, self.engine, channel_id, candidates, utcnow() - self.reuse_within
                )
            )
            chosen = [i for i in candidates if i not in shown][:1]
            try:
                posts += len((await self.post(channel_id, chosen, kind="feed"))[0])
            except (discord.HTTPException, OSError, ValueError) as exc:
                # One unusable feed channel (or image) never stops the others' feeds.
                logger.warning("rating feed: cannot post in channel %s (%s)", channel_id, exc)
        return posts
