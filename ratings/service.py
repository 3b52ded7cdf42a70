"""Recording rating events: the append-only log first, then the current rating, in one transaction.

A member's rating of an image is their most recent rating emoji on it.
Removing that emoji falls back to another rating emoji of theirs still on
the message, or removes the rating. Both follow from replaying the member's
events on that message, so the log is the single source of truth and a
replay after any crash gives the same answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dreamrate.db.models import (
    ChoiceEvent,
    Flag,
    GuildBan,
    Image,
    ImagePost,
    Job,
    Rating,
    RatingEvent,
    RatingEventKind,
    ReactionTombstone,
    User,
)
from dreamrate.db.types import UTCDateTime, utcnow
from dreamrate.db.users import dialect_insert
from dreamrate.ratings.choice_log import (
    choice_row,
    comparisons_of,
    members_on,
    present_choices,
    settle_choices,
)
from dreamrate.ratings.decisions import (
    Outcome,
    ReactionEvent,
    classify,
    decide,
    event_kind,
    fits_message,
    present_emojis,
    reconcile_plan,
    settle_plan,
    wanted_reactions,
)
from dreamrate.ratings.policy import counted_image, shown_in_guild
from dreamrate.ratings.scale import RatingScale

__all__ = ["WEB_SOURCE", "RatingService"]

#: The source of clicks on the web home: they count only on images its members may see
#: there now (:func:`~dreamrate.ratings.policy.shown_in_guild`), checked in the recording
#: transaction, so an image hidden (reported, its maker banned) after the page showed it
#: takes no rating or choice.
WEB_SOURCE = "web"

logger = logging.getLogger(__name__)

_UPDATE_RATING = (
    update(Rating)
    .where(Rating.user_id == bindparam("u"), Rating.image_id == bindparam("i"))
    .values(
        value=bindparam("v"),
        scale=bindparam("s"),
        source=bindparam("src"),
        rated_at=bindparam("at", type_=UTCDateTime()),
        updated_at=bindparam("now", type_=UTCDateTime()),
    )
)


class RatingService:
    """Turns reactions into the rating log and current ratings.

    Parameters
    ----------
    engine
        Async engine (SQLite or PostgreSQL).
    scale
        The rating scale in force; its name is stored with each rating.
    bot_user_id
        The bot's own Discord id: its seeded reactions are ignored.
    """

    def __init__(
        self, engine: AsyncEngine, scale: RatingScale, *, bot_user_id: int | None = None
    ) -> None:
        self.engine = engine
        self.scale = scale
        self.bot_user_id = bot_user_id
        self._is_pg = engine.dialect.name == "postgresql"
        self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")

    async def record(self, event: ReactionEvent, *, source: str = "reaction") -> Outcome:
        """Log ``event`` and update the member's current rating, atomically."""
        return (await self.record_many([event], source=source))[0]

    async def record_many(
        self, events: Sequence[ReactionEvent], *, source: str = "reaction"
    ) -> list[Outcome]:
        """Record ``events`` in order, in one transaction, with a fixed number of statements.

        Each event is appended to the log; then the current rating of every
        (member, image) the batch touched is derived by replaying that
        member's events on the message. Equivalent to recording them one by one.
        """
        outcomes: list[Outcome | None] = [
            classify(event, self.scale, self.bot_user_id) for event in events
        ]
        wanted = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if not wanted:
            return [o or Outcome.UNCHANGED for o in outcomes]
        async with self._write_engine.begin() as conn:
            # 1. The images and members involved
            message_ids = sorted({events[i].message_id for i in wanted})
            images = await self._images(conn, message_ids)
            pairs = await comparisons_of(conn, message_ids)
            names = {events[i].discord_user_id: events[i].user_name for i in wanted}
            users = await self._users(conn, names)
            banned_in = await self._guild_bans(conn, [u.id for u in users.values()])
            hidden = (
                await self._hidden(conn, [events[i] for i in wanted], images, pairs)
                if source == WEB_SOURCE
                else set()
            )
            # 2. Decide each event; log the ratings
            log: list[dict[str, Any]] = []
            choice_log: list[dict[str, Any]] = []
            tombstones: set[tuple[int, int]] = set()
            touched: dict[tuple[int, int], tuple[int, int]] = {}  # (member, image) -> rows
            chose: dict[tuple[int, int], tuple[int, tuple[int, int]]] = {}  # (member, post)
            now = utcnow()
            for i in wanted:
                event = events[i]
                if event.message_id in hidden:
                    outcomes[i] = Outcome.NOT_AN_IMAGE
                    continue
                pair = pairs.get(event.message_id)
                if not fits_message(event, self.scale, comparison=pair is not None):
                    # A choice emoji under one image, a rating emoji under a pair: ignored.
                    outcomes[i] = Outcome.NOT_A_RATING
                    continue
                image_id = pair[0] if pair is not None else images.get(event.message_id)
                user = users[event.discord_user_id]
                outcomes[i] = decide(
                    event,
                    self.scale,
                    image_id=image_id,
                    banned=user.banned or (event.guild_id, user.id) in banned_in,
                    opted_out=user.opted_out,
                    counted_since=user.counted_since,
                )
                if outcomes[i] in (Outcome.OPTED_OUT, Outcome.BEFORE_CONSENT):
                    # The reaction stays on Discord: backfill must never take it up later.
                    tombstones.add((user.id, event.message_id))
                elif outcomes[i] is Outcome.FLAGGED:
                    assert image_id is not None
                    outcomes[i] = await self._flag(conn, event, image_id, user.id)
                elif outcomes[i] is None and pair is not None:
                    kind = event_kind(event.added, source)
                    emoji = self.scale.choice_emoji(event.emoji)
                    assert emoji is not None
                    choice_log.append(choice_row(kind, emoji, event, user.id, self.scale, now))
                    chose[(event.discord_user_id, event.message_id)] = (user.id, pair)
                elif outcomes[i] is None:
                    assert image_id is not None
                    kind = event_kind(event.added, source)
                    log.append(self._event_row(kind, event.emoji, event, user.id, image_id, now))
                    touched[(event.discord_user_id, image_id)] = (user.id, image_id)
            if tombstones:
                await self._bury(conn, tombstones)
            # 3. Settle the current ratings and choices from the logs
            if choice_log:
                await conn.execute(ChoiceEvent.__table__.insert(), choice_log)
                chosen = await settle_choices(conn, chose, self.scale, source, now)
                for i in wanted:
                    key = (events[i].discord_user_id, events[i].message_id)
                    if outcomes[i] is None and key in chose:
                        outcomes[i] = chosen.get(key, Outcome.UNCHANGED)
            if log:
                await conn.execute(RatingEvent.__table__.insert(), log)
                changed = await self._settle(conn, touched, source, now)
                for i in wanted:
                    if outcomes[i] is None and events[i].message_id not in pairs:
                        key = (events[i].discord_user_id, images[events[i].message_id])
                        outcomes[i] = changed.get(key, Outcome.UNCHANGED)
        return [o or Outcome.UNCHANGED for o in outcomes]

    async def reconcile(
        self,
        message_id: int,
        on_discord: Mapping[str, Iterable[tuple[int, str]]],
        *,
        channel_id: int | None = None,
        guild_id: int | None = None,
    ) -> tuple[int, int]:
        """Make the log agree with the rating reactions Discord shows on one message (the
        choice reactions, on a comparison post).

        ``on_discord`` maps each rating (or choice) emoji to the ``(user id, user name)``
        pairs reacting with it. Missing reactions are logged as backfill adds,
        vanished ones as backfill removes. Idempotent. Returns ``(added, removed)``.
        """
        added = removed = 0
        async with self._write_engine.begin() as conn:
            pair = (await comparisons_of(conn, [message_id])).get(message_id)
            image_id = (await self._images(conn, [message_id])).get(message_id)
            if image_id is None and pair is None:
                return 0, 0
            wanted, names = wanted_reactions(
                on_discord, self.scale, self.bot_user_id, comparison=pair is not None
            )
            if guild_id is None:
                # A message fetched by channel id alone carries no guild: the image's job
                # says which guild's bans apply.
                guild_id = await conn.scalar(
                    select(Job.guild_id)
                    .join(Image, Image.job_id == Job.id)
                    .where(Image.id == (pair[0] if pair is not None else image_id))
                )
            if pair is not None:
                known = await members_on(conn, message_id)
            else:
                known = (
                    await conn.execute(
                        select(RatingEvent.discord_user_id)
                        .where(RatingEvent.message_id == message_id)
                        .distinct()
                    )
                ).scalars()
            involved = {u: names.get(u, "") for u in set(wanted) | set(known) if u is not None}
            users = await self._users(conn, involved) if involved else {}
            banned_in = await self._guild_bans(conn, [u.id for u in users.values()])
            buried = await self._buried(conn, message_id, [u.id for u in users.values()])
            new_graves: set[tuple[int, int]] = set()
            for user_id in sorted(involved):
                user = users[user_id]
                if user.banned or (guild_id, user.id) in banned_in:
                    continue
                target = wanted.get(user_id, set())
                if user.opted_out:
                    if target:  # there while they are out: never to count later
                        new_graves.add((user.id, message_id))
                    continue
                have = set(
                    await (present_choices if pair else self._present)(conn, user_id, message_id)
                )
                if user.id in buried or user.baseline_pending:
                    # Reactions from before an erase or an opt-in: only those the log saw
                    # the member add since may stay; nothing is taken up from Discord.
                    if target - have and user.id not in buried:
                        new_graves.add((user.id, message_id))
                    target = target & have
                events = reconcile_plan(have, target)
                if events:
                    event = ReactionEvent(
                        added=True,
                        discord_user_id=user_id,
                        message_id=message_id,
                        emoji="",
                        channel_id=channel_id,
                        guild_id=guild_id,
                    )
                    if pair is not None:
                        await self._apply_choices(conn, events, event, user.id, pair)
                    else:
                        assert image_id is not None
                        await self._apply(conn, events, event, image_id, user.id, "backfill")
                    added += len(target - have)
                    removed += len(have - target)
            if new_graves:
                await self._bury(conn, new_graves)
        return added, removed

    async def pending_baselines(self) -> list[int]:
        """Row ids of members whose next full backfill takes their baseline (after an erase
        or an opt-in)."""
        async with self.engine.connect() as conn:
            return list(
                (
                    await conn.execute(select(User.id).where(User.baseline_pending.is_(True)))
                ).scalars()
            )

    async def finish_baselines(self, user_ids: Sequence[int]) -> None:
        """A full backfill went through every recent message: these members' baselines are taken."""
        if user_ids:
            async with self._write_engine.begin() as conn:
                await conn.execute(
                    update(User).where(User.id.in_(list(user_ids))).values(baseline_pending=False)
                )

    # -- inside a transaction -----------------------------------------------------------

    async def _images(self, conn: AsyncConnection, message_ids: Sequence[int]) -> dict[int, int]:
        """Image id by message id, for the image's own message and its reposts (removed images left out)."""
        own = select(Image.discord_message_id.label("message_id"), Image.id).where(
            Image.discord_message_id.in_(message_ids), counted_image(leaving=False)
        )
        reposts = (
            select(ImagePost.message_id, Image.id)
            .join(Image, Image.id == ImagePost.image_id)
            .where(ImagePost.message_id.in_(message_ids), counted_image(leaving=False))
        )
        return {row[0]: row[1] for row in await conn.execute(own.union_all(reposts))}

    async def _hidden(
        self,
        conn: AsyncConnection,
        events: Sequence[ReactionEvent],
        images: Mapping[int, int],
        pairs: Mapping[int, tuple[int, int]],
    ) -> set[int]:
        """The messages of ``events`` (web clicks) showing an image their guild's members may
        not see now, or no image at all."""
        by_guild: dict[int | None, dict[int, tuple[int, ...]]] = {}
        for event in events:
            shows = pairs.get(event.message_id) or (
                (images[event.message_id],) if event.message_id in images else ()
            )
            by_guild.setdefault(event.guild_id, {})[event.message_id] = shows
        hidden: set[int] = set()
        for guild_id, messages in by_guild.items():
            ids = sorted({i for shows in messages.values() for i in shows})
            shown: set[int] = set()
            if guild_id is not None and ids:
                shown = set(
                    (
                        await conn.execute(
                            select(Image.id)
                            .join(Job, Job.id == Image.job_id)
                            .where(Image.id.in_(ids), shown_in_guild(guild_id))
                        )
                    ).scalars()
                )
            hidden |= {m for m, shows in messages.items() if not shows or not set(shows) <= shown}
        return hidden

    async def _users(self, conn: AsyncConnection, names: Mapping[int, str]) -> dict[int, Any]:
        """Members by Discord id, created if new; locked on PostgreSQL so one member's events apply in order."""
        query = (
            select(
                User.id,
                User.discord_id,
                User.banned,
                User.opted_out,
                User.counted_since,
                User.baseline_pending,
            )
            .where(User.discord_id.in_(sorted(names)))
            .order_by(User.discord_id)
        )
        if self._is_pg:
            query = query.with_for_update()
        found = {row.discord_id: row for row in await conn.execute(query)}
        missing = [d for d in names if d not in found]
        if missing:
            insert = dialect_insert(self.engine)
            now = utcnow()
            await conn.execute(
                insert(User).on_conflict_do_nothing(index_elements=["discord_id"]),
                [
                    {
                        "discord_id": d,
                        "name": names[d][:100],
                        "banned": False,
                        "opted_out": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for d in missing
                ],
            )
            found = {row.discord_id: row for row in await conn.execute(query)}
        return found

    async def _bury(self, conn: AsyncConnection, graves: set[tuple[int, int]]) -> None:
        insert = dialect_insert(self.engine)
        now = utcnow()
        await conn.execute(
            insert(ReactionTombstone).on_conflict_do_nothing(
                index_elements=["user_id", "message_id"]
            ),
            [{"user_id": u, "message_id": m, "created_at": now} for u, m in sorted(graves)],
        )

    async def _buried(
        self, conn: AsyncConnection, message_id: int, user_ids: list[int]
    ) -> set[int]:
        """Of ``user_ids``, those whose reactions on ``message_id`` are tombstoned."""
        if not user_ids:
            return set()
        rows = await conn.execute(
            select(ReactionTombstone.user_id).where(
                ReactionTombstone.message_id == message_id,
                ReactionTombstone.user_id.in_(user_ids),
            )
        )
        return set(rows.scalars())

    async def _guild_bans(self, conn: AsyncConnection, user_ids: list[int]) -> set[tuple[int, int]]:
        """``(guild id, user id)`` of every guild ban of these members."""
        if not user_ids:
            return set()
        rows = await conn.execute(
            select(GuildBan.guild_id, GuildBan.user_id).where(GuildBan.user_id.in_(user_ids))
        )
        return {(int(g), int(u)) for g, u in rows}

    def _event_row(
        self,
        kind: RatingEventKind,
        emoji: str,
        event: ReactionEvent,
        user_id: int,
        image_id: int,
        now: Any,
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "discord_user_id": event.discord_user_id,
            "user_id": user_id,
            "image_id": image_id,
            "guild_id": event.guild_id,
            "channel_id": event.channel_id,
            "message_id": event.message_id,
            "emoji": emoji,
            "value": self.scale.value_of(emoji),
            "scale": self.scale.name,
            "received_at": event.received_at or now,
        }

    async def _settle(
        self,
        conn: AsyncConnection,
        touched: Mapping[tuple[int, int], tuple[int, int]],
        source: str,
        now: Any,
    ) -> dict[tuple[int, int], Outcome]:
        """Set the current rating of every touched (member, image) from its replayed log.

        Replay keys are (message, emoji): an image shown in several messages is
        rated by the member's latest rating emoji on any of them.
        """
        discord_ids = sorted({d for d, _ in touched})
        image_ids_touched = sorted({i for _, i in touched})
        history: dict[tuple[int, int], list[Any]] = {}
        rows = await conn.execute(
            select(
                RatingEvent.discord_user_id,
                RatingEvent.image_id,
                RatingEvent.message_id,
                RatingEvent.kind,
                RatingEvent.emoji,
                RatingEvent.received_at,
            )
            .where(
                RatingEvent.image_id.in_(image_ids_touched),
                RatingEvent.discord_user_id.in_(discord_ids),
            )
            .order_by(RatingEvent.id)
        )
        for row in rows:
            key = (row.discord_user_id, row.image_id)
            if key in touched:
                history.setdefault(key, []).append(
                    (row.kind, (row.message_id, row.emoji), row.received_at)
                )
        user_ids = sorted({u for u, _ in touched.values()})
        image_ids = sorted({i for _, i in touched.values()})
        current = {
            (row.user_id, row.image_id): row.value
            for row in await conn.execute(
                select(Rating.user_id, Rating.image_id, Rating.value).where(
                    Rating.user_id.in_(user_ids), Rating.image_id.in_(image_ids)
                )
            )
        }
        plan = settle_plan(touched, history, current, self.scale)
        if plan.inserts:
            await conn.execute(
                Rating.__table__.insert(),
                [
                    {
                        "user_id": user_id,
                        "image_id": image_id,
                        "value": value,
                        "scale": self.scale.name,
                        "source": source,
                        "rated_at": at,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for user_id, image_id, value, at in plan.inserts
                ],
            )
        if plan.updates:
            await conn.execute(
                _UPDATE_RATING,
                [
                    {
                        "u": u,
                        "i": i,
                        "v": v,
                        "s": self.scale.name,
                        "src": source,
                        "at": at,
                        "now": now,
                    }
                    for u, i, v, at in plan.updates
                ],
            )
        for user_id, image_id in plan.deletes:
            await conn.execute(
                delete(Rating).where(Rating.user_id == user_id, Rating.image_id == image_id)
            )
        return plan.outcomes

    async def _present(
        self, conn: AsyncConnection, discord_user_id: int, message_id: int
    ) -> list[str]:
        rows = await conn.execute(
            select(RatingEvent.kind, RatingEvent.emoji)
            .where(
                RatingEvent.message_id == message_id, RatingEvent.discord_user_id == discord_user_id
            )
            .order_by(RatingEvent.id)
        )
        return present_emojis((row.kind, row.emoji) for row in rows)

    async def _apply(
        self,
        conn: AsyncConnection,
        events: Sequence[tuple[RatingEventKind, str]],
        event: ReactionEvent,
        image_id: int,
        user_id: int,
        source: str,
    ) -> Outcome:
        now = utcnow()
        await conn.execute(
            RatingEvent.__table__.insert(),
            [self._event_row(kind, emoji, event, user_id, image_id, now) for kind, emoji in events],
        )
        key = (event.discord_user_id, image_id)
        return (await self._settle(conn, {key: (user_id, image_id)}, source, now)).get(
            key, Outcome.UNCHANGED
        )

    async def _apply_choices(
        self,
        conn: AsyncConnection,
        events: Sequence[tuple[RatingEventKind, str]],
        event: ReactionEvent,
        user_id: int,
        pair: tuple[int, int],
    ) -> None:
        now = utcnow()
        await conn.execute(
            ChoiceEvent.__table__.insert(),
            [choice_row(kind, emoji, event, user_id, self.scale, now) for kind, emoji in events],
        )
        key = (event.discord_user_id, event.message_id)
        await settle_choices(conn, {key: (user_id, pair)}, self.scale, "backfill", now)

    async def _flag(
        self, conn: AsyncConnection, event: ReactionEvent, image_id: int, user_id: int
    ) -> Outcome:
        if not event.added:
            return Outcome.UNCHANGED  # a flag stays raised until a moderator reviews it
        exists = (
            await conn.execute(
                select(Flag.id).where(
                    Flag.image_id == image_id, Flag.user_id == user_id, Flag.resolved_at.is_(None)
                )
            )
        ).first()
        if exists is None:
            await conn.execute(
                Flag.__table__.insert().values(
                    image_id=image_id, user_id=user_id, reason="flag emoji", created_at=utcnow()
                )
            )
        return Outcome.FLAGGED
