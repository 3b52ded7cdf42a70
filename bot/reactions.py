"""Reactions into ratings, in gateway order, with backfill after every (re)connect.

discord.py dispatches each event as its own task, so on PostgreSQL a quick change of rating
could land out of order. Instead every raw reaction goes into one inbox that a single
consumer drains, batching whatever has arrived into one transaction. Backfill runs in the
same inbox, after every event that arrived before it: otherwise a stale queued event could
be applied after the reconciliation. A failing step is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord

from dreamrate.db.types import utcnow
from dreamrate.ratings.decisions import ReactionEvent
from dreamrate.ratings.posts import recent_image_messages

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.ratings.service import RatingService

__all__ = ["MAX_EVENTS_PER_BATCH", "ReactionRecorder"]

logger = logging.getLogger(__name__)

#: Most reaction events recorded in one transaction.
MAX_EVENTS_PER_BATCH = 1000
_BACKFILL = None  #: the inbox item that stands for "backfill here"


class ReactionRecorder:
    """The inbox of raw reaction events and the consumer that records them.

    Parameters
    ----------
    client
        The connected Discord client (backfill reads messages through it).
    engine
        The database (which messages show images).
    backfill_days
        How far back backfill re-reads reactions.
    """

    def __init__(self, client: discord.Client, *, engine: AsyncEngine, backfill_days: int) -> None:
        self.client = client
        self.engine = engine
        self.backfill_days = backfill_days
        self.ratings: RatingService | None = None
        #: Reaction events received from the gateway since this client started.
        self.received = 0
        #: Backfills completed since this client started.
        self.backfills = 0
        self._inbox: deque[ReactionEvent | None] = deque()
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- filling the inbox --------------------------------------------------------------------

    def reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        """Queue a raw gateway reaction (custom emoji are never rating emoji)."""
        self.received += 1
        if payload.emoji.id is not None:
            return
        self._put(
            ReactionEvent(
                added=added,
                discord_user_id=payload.user_id,
                message_id=payload.message_id,
                emoji=str(payload.emoji.name),
                channel_id=payload.channel_id,
                guild_id=payload.guild_id,
                user_name=payload.member.name if payload.member is not None else "",
            )
        )

    def request_backfill(self) -> None:
        """Backfill once every event queued so far is recorded (on ready and on resume)."""
        self._put(_BACKFILL)

    def _put(self, item: ReactionEvent | None) -> None:
        self._inbox.append(item)
        self._idle.clear()
        self._arrived.set()

    async def drained(self) -> None:
        """|coro| Until everything queued so far is recorded (and any backfill has run)."""
        await self._idle.wait()

    # -- draining it --------------------------------------------------------------------------

    async def _next(self) -> list[ReactionEvent] | None:
        """The next batch of events in gateway order, or None for a backfill."""
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        if self._inbox[0] is _BACKFILL:
            self._inbox.popleft()
            return None
        batch: list[ReactionEvent] = []
        while self._inbox and self._inbox[0] is not _BACKFILL and len(batch) < MAX_EVENTS_PER_BATCH:
            item = self._inbox.popleft()
            assert item is not None
            batch.append(item)
        return batch

    async def record_forever(self, ratings: RatingService) -> None:
        """|coro| Record queued events and run queued backfills, in order, until cancelled."""
        self.ratings = ratings
        while True:
            batch = await self._next()
            if batch is None:
                await _retrying(self.backfill, "backfill")
                self.backfills += 1
            else:
                await _retrying(lambda b=batch: ratings.record_many(b), "recording reactions")
            if not self._inbox:
                self._idle.set()

    async def backfill(self) -> tuple[int, int, int]:
        """|coro| Re-read the rating reactions on recent image messages and reconcile both ways.

        Returns ``(messages checked, reactions added, reactions removed)``.
        """
        if self.ratings is None:
            return 0, 0, 0
        scale = self.ratings.scale
        since = utcnow() - timedelta(days=self.backfill_days)
        checked = added = removed = 0
        for message_id, channel_id in await recent_image_messages(self.engine, since):
            try:
                channel = self.client.get_partial_messageable(channel_id)
                message = await channel.fetch_message(message_id)
            except discord.NotFound:
                continue
            on_discord: dict[str, list[tuple[int, str]]] = {}
            for reaction in message.reactions:
                if isinstance(reaction.emoji, str) and scale.value_of(reaction.emoji) is not None:
                    on_discord[reaction.emoji] = [
                        (u.id, u.name) async for u in reaction.users(limit=None)
                    ]
            a, r = await self.ratings.reconcile(
                message_id,
                on_discord,
                channel_id=channel_id,
                guild_id=message.guild.id if message.guild else None,
            )
            checked, added, removed = checked + 1, added + a, removed + r
        logger.info(
            "backfill: %d message(s) checked, %d rating reaction(s) added, %d removed",
            checked,
            added,
            removed,
        )
        return checked, added, removed


async def _retrying(step: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run ``step`` until it succeeds, backing off: nothing recorded is ever dropped."""
    delay = 0.5
    while True:
        try:
            await step()
            return
        except Exception as exc:
            logger.warning("%s failed (%s); retrying in %.1fs", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
