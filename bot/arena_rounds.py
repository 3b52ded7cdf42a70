"""The arena's rounds on Discord: the pair posted when both images are made (names hidden),
a failed round said, and the card edited to name the models when the round closes.

The rounds themselves (starting them, when one is due, its results) are the community's
(:mod:`dreamrate.community.arena`); the two jobs go through the ordinary queue but are
never delivered as posts of their own (no channel on the job), so nothing names the models
while the round is open.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

import discord

from dreamrate.bot.embeds import arena_embed
from dreamrate.bot.uploads import pair_file
from dreamrate.community.arena import (
    RoundState,
    close_round,
    fail_round,
    open_round,
    rounds_due,
    shown_model_name,
)
from dreamrate.community.members import Member
from dreamrate.db.models import JobStatus
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.bot.publisher import Publisher
    from dreamrate.community.arena import ArenaRounds
    from dreamrate.generation.queue import JobRepository
    from dreamrate.generation.store import ImageStore

__all__ = ["FEED_CHECK_SECONDS", "Arena"]

logger = logging.getLogger(__name__)

#: Seconds between looks for feed channels that need a new round.
FEED_CHECK_SECONDS = 30.0


class Arena:
    """Posts rounds when both images are made, closes them after ``hours``, and keeps the
    feeds' rounds going.

    Parameters
    ----------
    client
        The connected Discord client.
    rounds
        The arena's use case (its engine and queue too).
    publisher
        Posts the pair exactly once, with the choice emoji.
    store
        The image store the worker wrote the images to.
    hours
        How long a round stays open.
    interval
        Seconds between two looks for rounds that are due.
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        rounds: ArenaRounds,
        publisher: Publisher,
        store: ImageStore,
        hours: float = 24.0,
        interval: float = 5.0,
    ) -> None:
        self.client, self.rounds, self.publisher = client, rounds, publisher
        self.store = store
        self.engine: AsyncEngine = rounds.engine
        self.repo: JobRepository = rounds.requests.repo
        self.duration = timedelta(hours=hours)
        self.interval = interval
        self._feed_checked = -math.inf

    def look_at_feeds_soon(self) -> None:
        """Start the feeds' missing rounds at the next step, not after FEED_CHECK_SECONDS
        (a moderator who turns a feed's arena on sees its first round at once)."""
        self._feed_checked = -math.inf

    async def run_forever(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round never stops the loop
                logger.exception("arena step failed")
            await asyncio.sleep(self.interval)

    async def step(self) -> int:
        """|coro| Post, fail or close the rounds that are due, and start the feeds' next
        ones; returns how many changed."""
        now = time.monotonic()
        me = self.client.user
        if me is not None and now - self._feed_checked >= FEED_CHECK_SECONDS:
            self._feed_checked = now
            await self.rounds.feed_rounds(Member(me.id, me.name))
        due = await retry_on_disconnect(partial(rounds_due, self.engine))
        for state in due:
            try:
                if state.status == "open":
                    await self._close(state)
                elif JobStatus.DONE == state.left_status == state.right_status:
                    await self._post(state)
                else:
                    await self._fail(state, "could not be rendered")
            except discord.HTTPException as exc:
                # One round that cannot post (a deleted channel, lost permissions) never
                # holds up the others; refused outright, it ends.
                logger.warning("arena round %s: Discord answered %s", state.id, exc.status)
                if exc.status < 500:
                    await retry_on_disconnect(partial(fail_round, self.engine, state.id))
            except (OSError, IndexError) as exc:  # an image file gone, a job without images
                logger.warning("arena round %s: %s", state.id, exc)
                await retry_on_disconnect(partial(fail_round, self.engine, state.id))
        return len(due)

    async def _fail(self, state: RoundState, why: str) -> None:
        await retry_on_disconnect(partial(fail_round, self.engine, state.id))
        channel = self.client.get_partial_messageable(state.channel_id)
        await channel.send(f"An arena round {why}; start another with /arena.")

    async def _post(self, state: RoundState) -> None:
        left = (await retry_on_disconnect(partial(self.repo.images, state.left_job_id)))[0]
        right = (await retry_on_disconnect(partial(self.repo.images, state.right_job_id)))[0]
        if left.flagged or left.removed or right.flagged or right.removed:
            await self._fail(
                state, "was stopped: the safety check or a moderator held an image back"
            )
            return
        recovered = await retry_on_disconnect(
            partial(self.publisher.posts.arena_post, left.id, right.id)
        )
        if recovered is not None:  # posted before a crash, recorded by the recovery since
            await retry_on_disconnect(
                partial(open_round, self.engine, state.id, recovered, utcnow() + self.duration)
            )
            return
        channel = self.client.get_partial_messageable(state.channel_id)
        # Read before the post is begun: a store that is down delays it, nothing more.
        pair = await asyncio.gather(
            asyncio.to_thread(self.store.read, left.path),
            asyncio.to_thread(self.store.read, right.path),
        )

        def send(nonce: str) -> Awaitable[discord.Message]:
            return channel.send(
                file=pair_file(*pair, f"dreamrate-arena-{state.id}-{nonce}"),
                embed=arena_embed(self.publisher.scale.choice_emojis, state.prompt),
            )

        message_id = await self.publisher.post_once(
            state.channel_id, left.id, "arena", send, other_image_id=right.id
        )
        # A crash before this line leaves the post recorded: the next step opens the round.
        await retry_on_disconnect(
            partial(open_round, self.engine, state.id, message_id, utcnow() + self.duration)
        )

    async def _close(self, state: RoundState) -> None:
        await retry_on_disconnect(partial(close_round, self.engine, state.id))
        if state.message_id is None:
            return
        message = self.client.get_partial_messageable(state.channel_id).get_partial_message(
            state.message_id
        )
        names = (shown_model_name(state.left_model), shown_model_name(state.right_model))
        try:
            await message.edit(
                embed=arena_embed(self.publisher.scale.choice_emojis, state.prompt, names)
            )
        except discord.HTTPException as exc:  # deleted by a moderator: the round still closes
            logger.warning("arena round %s: cannot name the models (%s)", state.id, exc.status)
