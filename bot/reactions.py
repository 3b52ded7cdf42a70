"""Reactions into ratings, in gateway order, with backfill after every (re)connect.

discord.py dispatches each event as its own task, so on PostgreSQL a quick change of rating
could land out of order. Instead every raw reaction goes into one inbox that a single
consumer drains, batching whatever has arrived into one transaction. Backfill runs in the
same inbox, after every event that arrived before it: otherwise a stale queued event could
be applied after the reconciliation. A failing step is retried, never dropped.

Nothing here may stall or grow without bound, because the reactions stay on Discord and a
reconciliation of a message can always recover them:

* the inbox is bounded: past ``max_queued`` events an event is not queued, and its message
  is reconciled a moment later instead (back-pressure is logged and counted);
* each member has a token bucket: a scripted account toggling one emoji is not logged event
  by event, its messages are reconciled once it calms down, and nobody else waits;
* backfill skips a channel the bot can no longer read (403, deleted: one log line) and
  tries it again later, with growing pauses, instead of retrying it forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord

from dreamrate.bot.loops import every
from dreamrate.community.posts import PostRepository
from dreamrate.db.types import utcnow
from dreamrate.ratings.decisions import ReactionEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.ratings.service import RatingService

__all__ = ["MAX_EVENTS_PER_BATCH", "MAX_QUEUED", "ReactionRecorder", "TokenBucket"]

logger = logging.getLogger(__name__)

#: Most reaction events recorded in one transaction.
MAX_EVENTS_PER_BATCH = 1000
#: Most events waiting in the inbox; past it, messages are reconciled instead.
MAX_QUEUED = 20_000
#: Seconds between a throttled or overflowing event and the reconciliation of its message.
REPAIR_AFTER_S = 2.0
#: Pauses before a channel that refused backfill is tried again: first, then doubling to the last.
CHANNEL_RETRY_S = (60.0, 3600.0)
#: Seconds between looks for members whose baseline waits (after an erase or an opt-in, made
#: with ``/privacy`` or on the web home: both only mark it, in the database).
BASELINE_CHECK_S = 2.0


@dataclass(frozen=True)
class _Backfill:
    """An inbox item: reconcile these messages (None: every recent one)."""

    messages: frozenset[int] | None = None
    channels: frozenset[int] | None = None


@dataclass
class TokenBucket:
    """``burst`` events at once, then ``per_second`` (pure: the caller passes the clock)."""

    burst: float
    per_second: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


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
    max_queued
        Most events waiting to be recorded.
    burst, per_second
        Each member's reaction allowance (a token bucket).
    """

    def __init__(
        self,
        client: discord.Client,
        *,
        engine: AsyncEngine,
        backfill_days: int,
        max_queued: int = MAX_QUEUED,
        burst: float = 20.0,
        per_second: float = 2.0,
    ) -> None:
        self.client = client
        self.engine = engine
        self.posts = PostRepository(engine)
        self.backfill_days = backfill_days
        self.max_queued = max_queued
        self.burst, self.per_second = burst, per_second
        self.ratings: RatingService | None = None
        #: Reaction events received from the gateway since this client started.
        self.received = 0
        #: Backfills completed since this client started (repairs of a few messages too).
        self.backfills = 0
        #: Events not queued because their member was over their allowance / the inbox full.
        self.throttled = 0
        self.overflowed = 0
        #: Between a dropped connection and RESUMED, events are the gateway's replay.
        self.replaying = False
        self._inbox: deque[ReactionEvent | _Backfill] = deque()
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._buckets: dict[int, TokenBucket] = {}
        self._to_repair: dict[int, int] = {}  # message -> channel
        self._repair: asyncio.TimerHandle | None = None
        self._blocked: dict[int, tuple[float, float]] = {}  # channel -> (until, last pause)
        self._baselines_asked: set[int] = set()  # members a full pass was asked for
        self._recording_since: datetime | None = None  # oldest arrival in the batch in hand

    # -- filling the inbox --------------------------------------------------------------------

    def reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        """Queue a raw gateway reaction (the bot's own seeded reactions are never ratings)."""
        self.received += 1
        me = self.client.user
        if me is not None and payload.user_id == me.id:
            return
        bucket = self._buckets.setdefault(payload.user_id, TokenBucket(self.burst, self.per_second))
        if not bucket.take(time.monotonic()):
            self.throttled += 1
            self._repair_later(payload.message_id, payload.channel_id)
            return
        if len(self._inbox) >= self.max_queued:
            if not self.overflowed:
                logger.warning(
                    "reaction inbox full (%d events): reconciling messages instead", self.max_queued
                )
            self.overflowed += 1
            self._repair_later(payload.message_id, payload.channel_id)
            return
        self._put(
            ReactionEvent(
                added=added,
                discord_user_id=payload.user_id,
                message_id=payload.message_id,
                # A Unicode emoji as itself, a guild's custom emoji as <:name:id>: as the
                # scale names them (a custom emoji can be a rating emoji).
                emoji=str(payload.emoji),
                channel_id=payload.channel_id,
                guild_id=payload.guild_id,
                user_name=payload.member.name if payload.member is not None else "",
                # A resume replays what was missed in a burst: those times are not the member's.
                received_at=None if self.replaying else utcnow(),
            )
        )

    def cleared(self, message_id: int, channel_id: int) -> None:
        """A moderator removed every reaction (or every one of an emoji) from a message:
        Discord sends one event, not a removal per member, so reconcile that message once
        the events before it are recorded."""
        self.received += 1
        self._put(_Backfill(messages=frozenset({message_id})))

    def request_backfill(self) -> None:
        """Backfill once every event queued so far is recorded (on ready and on resume)."""
        if any(
            isinstance(i, _Backfill) and i.messages is None and i.channels is None
            for i in self._inbox
        ):
            return  # one full pass already waits: it will see everything this one would
        self._put(_Backfill())

    async def watch_baselines(self) -> None:
        """|coro| Ask for a full backfill whenever a member's baseline waits that no pass
        was asked for yet: an erase or an opt-in marks it in the database (from ``/privacy``
        or the web home alike), and only a full pass takes it."""

        async def look() -> None:
            if self.ratings is None:
                return
            waiting = set(await self.ratings.pending_baselines())
            self._baselines_asked &= waiting  # taken since: a new erase asks again
            if waiting - self._baselines_asked:
                self._baselines_asked |= waiting
                self.request_backfill()

        await every(self.client, BASELINE_CHECK_S, look, "baseline watch")

    def _repair_later(self, message_id: int, channel_id: int) -> None:
        self._to_repair[message_id] = channel_id
        self._idle.clear()  # a repair is owed: not drained until it ran
        if self._repair is None:
            loop = asyncio.get_running_loop()
            self._repair = loop.call_later(REPAIR_AFTER_S, self._queue_repair)

    def _queue_repair(self) -> None:
        self._repair = None
        messages, self._to_repair = frozenset(self._to_repair), {}
        self._put(_Backfill(messages=messages))

    def _put(self, item: ReactionEvent | _Backfill) -> None:
        self._inbox.append(item)
        self._idle.clear()
        self._arrived.set()

    async def drained(self) -> None:
        """|coro| Until everything queued so far is recorded (and any backfill or owed
        reconciliation has run)."""
        await self._idle.wait()

    @property
    def queued(self) -> int:
        """Events waiting in the inbox (back-pressure shows here first)."""
        return len(self._inbox)

    def lag(self) -> float:
        """Seconds the oldest event not yet recorded has waited (the batch being recorded
        included; replayed and backfilled events carry no arrival time and are not counted)."""
        arrivals = [at for at in (self._recording_since,) if at is not None]
        for item in self._inbox:  # gateway order: the first timed event is the oldest
            if isinstance(item, ReactionEvent) and item.received_at is not None:
                arrivals.append(item.received_at)
                break
        return max(((utcnow() - at).total_seconds() for at in arrivals), default=0.0)

    # -- draining it --------------------------------------------------------------------------

    async def _next(self) -> list[ReactionEvent] | _Backfill:
        """The next batch of events in gateway order, or a backfill."""
        while not self._inbox:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._inbox[0]
        if isinstance(first, _Backfill):
            self._inbox.popleft()
            return first
        batch: list[ReactionEvent] = []
        while self._inbox and isinstance(self._inbox[0], ReactionEvent):
            batch.append(self._inbox.popleft())  # type: ignore[arg-type]
            if len(batch) >= MAX_EVENTS_PER_BATCH:
                break
        return batch

    async def record_forever(self, ratings: RatingService) -> None:
        """|coro| Record queued events and run queued backfills, in order, until cancelled."""
        self.ratings = ratings
        while True:
            step = await self._next()
            if isinstance(step, _Backfill):
                await _retrying(
                    lambda s=step: self.backfill(messages=s.messages, channels=s.channels),
                    "backfill",
                )
                self.backfills += 1
            else:
                times = [e.received_at for e in step if e.received_at is not None]
                self._recording_since = min(times, default=None)
                try:
                    await _retrying(lambda b=step: ratings.record_many(b), "recording reactions")
                finally:
                    self._recording_since = None
            if not self._inbox and not self._to_repair:
                self._idle.set()

    async def backfill(
        self,
        *,
        messages: frozenset[int] | None = None,
        channels: frozenset[int] | None = None,
    ) -> tuple[int, int, int]:
        """|coro| Re-read the rating reactions on recent image messages (all, or only these
        messages or channels) and reconcile both ways.

        A channel the bot may not read (or that is gone) is skipped with one log line and
        tried again later; other errors skip one message. Returns ``(messages checked,
        reactions added, reactions removed)``.
        """
        if self.ratings is None:
            return 0, 0, 0
        scale = self.ratings.scale
        since = utcnow() - timedelta(days=self.backfill_days)
        full = messages is None and channels is None
        # Members who erased or opted in since the last full pass: this pass takes their
        # baseline (their reactions the log lacks become tombstones), if it reads everything.
        baselines = await self.ratings.pending_baselines() if full else []
        self._baselines_asked |= set(baselines)  # this pass takes them
        complete = True
        checked = added = removed = 0
        for message_id, channel_id in await self.posts.recent_image_messages(since):
            if (messages is not None and message_id not in messages) or (
                channels is not None and channel_id not in channels
            ):
                continue
            if self._blocked.get(channel_id, (0.0, 0.0))[0] > time.monotonic():
                complete = False
                continue
            try:
                message = await self.client.get_partial_messageable(channel_id).fetch_message(
                    message_id
                )
                on_discord: dict[str, list[tuple[int, str]]] = {}
                for reaction in message.reactions:
                    emoji = str(reaction.emoji)  # a custom emoji as <:name:id>
                    if scale.value_of(emoji) is not None or scale.winner_of(emoji) is not None:
                        on_discord[emoji] = [
                            (u.id, u.name) async for u in reaction.users(limit=None)
                        ]
            except discord.NotFound as exc:
                if exc.code == 10003:  # Unknown Channel: deleted, or the bot was removed
                    self._block(channel_id, exc)
                continue  # a deleted message has no reactions left to read
            except discord.Forbidden as exc:
                self._block(channel_id, exc)
                complete = False
                continue
            except discord.HTTPException as exc:
                logger.warning("backfill: message %s skipped (%s)", message_id, exc.status)
                complete = False
                continue
            self._blocked.pop(channel_id, None)
            a, r = await self.ratings.reconcile(
                message_id,
                on_discord,
                channel_id=channel_id,
                guild_id=message.guild.id if message.guild else None,
            )
            checked, added, removed = checked + 1, added + a, removed + r
        if baselines and complete:
            await self.ratings.finish_baselines(baselines)
        logger.info(
            "backfill: %d message(s) checked, %d rating reaction(s) added, %d removed",
            checked,
            added,
            removed,
        )
        return checked, added, removed

    def _block(self, channel_id: int, exc: discord.HTTPException) -> None:
        """Leave a channel alone for a while (the pause doubles each time), then retry it."""
        first, longest = CHANNEL_RETRY_S
        pause = min(self._blocked.get(channel_id, (0.0, first / 2))[1] * 2, longest)
        self._blocked[channel_id] = (time.monotonic() + pause, pause)
        logger.warning(
            "backfill: channel %s refused (%s %s); trying it again in %.0f s",
            channel_id,
            exc.status,
            exc.text or "",
            pause,
        )
        retry = _Backfill(channels=frozenset({channel_id}))
        asyncio.get_running_loop().call_later(pause, self._put, retry)


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
