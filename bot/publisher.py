"""Posting a message exactly once, and seeding its emoji: the one publisher that delivery, the
rating feed, ``/rate``, ``/compare`` and the arena all post through.

The protocol: look for an unanswered send of the same post (an intent left by a crash or a
5xx) and record the message it made if Discord has it; else write the intent, send with
the intent's nonce in the attachment's name, and record the message (which clears the
intent in the same transaction). A send refused outright (4xx) posted nothing: its intent
is dropped. :meth:`Publisher.recover` finishes what a crash left, the same way.
The SQL is :class:`~dreamrate.community.posts.PostRepository`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import discord

from dreamrate.community.posts import OWN, Intent
from dreamrate.db.retry import retry_on_disconnect

if TYPE_CHECKING:
    from dreamrate.community.posts import PostRepository
    from dreamrate.ratings.scale import RatingScale

__all__ = ["Publisher", "Send", "attachment_stem", "find_posted"]

logger = logging.getLogger(__name__)

#: How far back before an intent the channel is searched (clock skew, slow uploads).
_SLACK = timedelta(minutes=1)

#: Sends the message, the intent's nonce in its attachment's name.
Send = Callable[[str], Awaitable[discord.Message]]
#: A message and the emoji to put under it.
_Seeding = tuple[int, tuple[str, ...]]


def attachment_stem(job_id: int, index: int, nonce: str) -> str:
    """An image's file name without extension: ``dreamrate-<job>-<n>-<nonce>``."""
    return f"dreamrate-{job_id}-{index + 1}-{nonce}"


async def find_posted(
    client: discord.Client, channel_id: int, nonce: str, since: datetime
) -> discord.Message | None:
    """|coro| The bot's message in ``channel_id`` whose attachment carries ``nonce``,
    posted after ``since``; None when the post never happened."""
    me = client.user
    after = discord.Object(id=discord.utils.time_snowflake(since - _SLACK))
    channel = client.get_partial_messageable(channel_id)
    async for message in channel.history(limit=100, after=after, oldest_first=True):
        mine = me is not None and message.author.id == me.id
        if mine and any(nonce in attachment.filename for attachment in message.attachments):
            return message
    return None


class Publisher:
    """Posts exactly once and seeds the emoji members rate or choose with.

    Parameters
    ----------
    client
        The connected Discord client.
    posts
        The post repository.
    scale
        The rating and choice emoji.
    seed
        Add the emoji under each post (each costs a reaction call).
    """

    def __init__(
        self,
        client: discord.Client,
        posts: PostRepository,
        scale: RatingScale,
        *,
        seed: bool = True,
    ) -> None:
        self.client = client
        self.posts = posts
        self.scale = scale
        self.seeds = seed
        self._to_seed: dict[int, asyncio.Queue[_Seeding]] = {}  # channel -> messages
        self._seeders: dict[int, asyncio.Task[None]] = {}

    def emojis_for(self, intent: Intent) -> tuple[str, ...]:
        """What a post is seeded with: the choice emoji under a pair, else the rating ones."""
        if not self.seeds:
            return ()
        return self.scale.choice_reactions if intent.other_image_id else self.scale.reaction_emojis

    async def post_once(
        self,
        channel_id: int,
        image_id: int,
        kind: str,
        send: Send,
        *,
        other_image_id: int | None = None,
    ) -> int:
        """|coro| Post ``image_id`` (beside ``other_image_id``, for a comparison) as ``kind``
        in ``channel_id`` with ``send``, exactly once; returns the message's id.

        Raises
        ------
        discord.HTTPException
            when Discord refuses the send (nothing was posted) or fails (it may have been:
            the intent stays, to be found).
        """
        posts = self.posts
        intent = await retry_on_disconnect(
            partial(posts.intent, image_id, channel_id, kind, other_image_id=other_image_id)
        )
        message: discord.Message | None = None
        if intent is not None:  # an earlier send went unanswered: did it go out?
            message = await find_posted(self.client, channel_id, intent.nonce, intent.created_at)
            if message is None:
                await retry_on_disconnect(partial(posts.retry, intent.nonce))
        else:
            if kind == OWN:
                # Recovery at start may have found and recorded it since the caller read the
                # image: an image has one own message.
                posted = await retry_on_disconnect(partial(posts.own_message, image_id))
                if posted is not None:
                    return posted
            # The row is written first: a message is never left whose reactions don't count.
            intent = await retry_on_disconnect(
                partial(posts.begin, image_id, channel_id, kind, other_image_id=other_image_id)
            )
        if message is None:
            try:
                message = await send(intent.nonce)
            except discord.HTTPException as exc:
                if exc.status < 500:  # refused outright: nothing was posted, nothing to find
                    await retry_on_disconnect(partial(posts.drop, intent.nonce))
                raise
        # The message may land in another channel than asked (a webhook follow-up does not).
        done = Intent(
            intent.nonce,
            image_id,
            other_image_id,
            message.channel.id,
            kind,
            intent.created_at,
        )
        await retry_on_disconnect(partial(posts.record, done, message.id))
        self.seed(message.channel.id, message.id, self.emojis_for(done))
        return message.id

    async def recover(
        self,
        *,
        channel_id: int | None = None,
        before: datetime | None = None,
        kinds: Collection[str] | None = None,
    ) -> list[int]:
        """|coro| Finish the posts whose send went unanswered (a crash, a 5xx): recorded and
        seeded if the message went out after all, forgotten if not. Only intents in
        ``channel_id``, of ``kinds``, made before ``before`` (a send still in flight is left
        alone). Returns the messages recorded."""
        found_ids = []
        intents = await retry_on_disconnect(
            partial(self.posts.unfinished, channel_id=channel_id, before=before, kinds=kinds)
        )
        for intent in intents:
            try:
                found = await find_posted(
                    self.client, intent.channel_id, intent.nonce, intent.created_at
                )
            except discord.HTTPException as exc:
                logger.warning(
                    "post %s: cannot look in channel %s (%s)",
                    intent.nonce,
                    intent.channel_id,
                    exc.status,
                )
                continue
            if found is None:
                await retry_on_disconnect(partial(self.posts.drop, intent.nonce))
                continue
            await retry_on_disconnect(partial(self.posts.record, intent, found.id))
            self.seed(intent.channel_id, found.id, self.emojis_for(intent))
            found_ids.append(found.id)
        return found_ids

    # -- the emoji ----------------------------------------------------------------------

    def seed(self, channel_id: int, message_id: int, emojis: tuple[str, ...]) -> None:
        """Queue ``emojis`` under a posted message. Each channel has one seeder: Discord
        allows one reaction per 0.25 s per channel, and the seeder keeps that bucket busy
        while the next images are uploaded (a separate bucket)."""
        if not emojis:
            return
        queue = self._to_seed.setdefault(channel_id, asyncio.Queue())
        queue.put_nowait((message_id, emojis))
        if channel_id not in self._seeders or self._seeders[channel_id].done():
            self._seeders[channel_id] = asyncio.create_task(
                self._seed_forever(channel_id, queue), name=f"seed-{channel_id}"
            )

    async def seeded(self) -> None:
        """|coro| Until every emoji queued so far is under its message (or given up)."""
        await asyncio.gather(*(queue.join() for queue in self._to_seed.values()))

    async def _seed_forever(self, channel_id: int, queue: asyncio.Queue[_Seeding]) -> None:
        channel = self.client.get_partial_messageable(channel_id)
        while True:
            message_id, emojis = await queue.get()
            partial_message = channel.get_partial_message(message_id)
            try:
                for emoji in emojis:
                    await partial_message.add_reaction(emoji)
            except discord.Forbidden as exc:
                # The image is up; members can still react by hand. Don't knock again.
                logger.warning("message %s: cannot seed the emoji (%s)", message_id, exc.text)
            except discord.HTTPException as exc:
                logger.warning("message %s: emoji not all seeded (%s)", message_id, exc.status)
            finally:
                queue.task_done()

    def close(self) -> None:
        """Stop seeding (the client is closing)."""
        for seeder in self._seeders.values():
            seeder.cancel()
