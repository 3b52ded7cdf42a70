"""Choices on comparison posts, inside the transaction that records reactions.

The same rules as ratings (:mod:`dreamrate.ratings.service`): every raw event goes into an
append-only log (``choice_events``) first, and a member's current choice on a post is their
latest choice emoji still there, replayed from that log. Removing it falls back to another
choice emoji of theirs on the post, or removes the choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from dreamrate.db.models import (
    ArenaRound,
    Choice,
    ChoiceEvent,
    ComparisonPost,
    Image,
    RatingEventKind,
)
from dreamrate.db.types import UTCDateTime
from dreamrate.ratings.decisions import Outcome, ReactionEvent, present_emojis, settle_choice
from dreamrate.ratings.policy import counted_image
from dreamrate.ratings.scale import RatingScale

__all__ = [
    "Pair",
    "choice_row",
    "comparisons_of",
    "members_on",
    "present_choices",
    "settle_choices",
]

Pair = tuple[int, int]  #: (left image id, right image id)
Key = tuple[int, int]  #: (Discord user id, message id)

_UPDATE_CHOICE = (
    update(Choice)
    .where(Choice.user_id == bindparam("u"), Choice.message_id == bindparam("m"))
    .values(
        winner=bindparam("w"),
        source=bindparam("src"),
        chosen_at=bindparam("at", type_=UTCDateTime()),
        updated_at=bindparam("now", type_=UTCDateTime()),
    )
)


def _kept(image_id: Any) -> Any:
    return exists().where(Image.id == image_id, counted_image(leaving=False))


async def comparisons_of(conn: AsyncConnection, message_ids: Sequence[int]) -> dict[int, Pair]:
    """The pair each of these messages compares, for comparison posts whose two images are
    both still kept (a removed image ends its comparisons, as it ends its ratings)."""
    if not message_ids:
        return {}
    rows = await conn.execute(
        select(ComparisonPost.message_id, ComparisonPost.image_a_id, ComparisonPost.image_b_id)
        .where(ComparisonPost.message_id.in_(list(message_ids)))
        .where(_kept(ComparisonPost.image_a_id), _kept(ComparisonPost.image_b_id))
        # A closed arena round is settled: its post names the models now, so a choice
        # made, changed or taken back since would not be blind.
        .where(
            ~exists().where(
                ArenaRound.message_id == ComparisonPost.message_id, ArenaRound.status == "closed"
            )
        )
    )
    return {int(m): (int(a), int(b)) for m, a, b in rows}


def choice_row(
    kind: RatingEventKind,
    emoji: str,
    event: ReactionEvent,
    user_id: int,
    scale: RatingScale,
    now: datetime,
) -> dict[str, Any]:
    """One ``choice_events`` row."""
    winner = scale.winner_of(emoji)
    assert winner is not None
    return {
        "kind": kind,
        "discord_user_id": event.discord_user_id,
        "user_id": user_id,
        "message_id": event.message_id,
        "guild_id": event.guild_id,
        "channel_id": event.channel_id,
        "emoji": emoji,
        "winner": winner,
        "received_at": event.received_at or now,
    }


async def present_choices(
    conn: AsyncConnection, discord_user_id: int, message_id: int
) -> list[str]:
    """The member's choice emoji still on the post, according to the log."""
    rows = await conn.execute(
        select(ChoiceEvent.kind, ChoiceEvent.emoji)
        .where(ChoiceEvent.message_id == message_id, ChoiceEvent.discord_user_id == discord_user_id)
        .order_by(ChoiceEvent.id)
    )
    return present_emojis((row.kind, row.emoji) for row in rows)


async def members_on(conn: AsyncConnection, message_id: int) -> list[int]:
    """Discord ids of everyone the log has seen choose on the post."""
    rows = await conn.execute(
        select(ChoiceEvent.discord_user_id).where(ChoiceEvent.message_id == message_id).distinct()
    )
    return [int(u) for u in rows.scalars() if u is not None]


async def settle_choices(
    conn: AsyncConnection,
    touched: Mapping[Key, tuple[int, Pair]],
    scale: RatingScale,
    source: str,
    now: datetime,
) -> dict[Key, Outcome]:
    """Set the current choice of every touched (member, post) from its replayed log.

    ``touched`` maps (Discord user id, message id) to (user row id, the post's pair)."""
    if not touched:
        return {}
    discord_ids = sorted({d for d, _ in touched})
    message_ids = sorted({m for _, m in touched})
    history: dict[Key, list[tuple[RatingEventKind, str, datetime | None]]] = {}
    rows = await conn.execute(
        select(
            ChoiceEvent.discord_user_id,
            ChoiceEvent.message_id,
            ChoiceEvent.kind,
            ChoiceEvent.emoji,
            ChoiceEvent.received_at,
        )
        .where(
            ChoiceEvent.message_id.in_(message_ids),
            ChoiceEvent.discord_user_id.in_(discord_ids),
        )
        .order_by(ChoiceEvent.id)
    )
    for row in rows:
        key = (int(row.discord_user_id), int(row.message_id))
        if key in touched:
            history.setdefault(key, []).append((row.kind, row.emoji, row.received_at))
    user_ids = sorted({u for u, _ in touched.values()})
    current = {
        (int(row.user_id), int(row.message_id)): row.winner
        for row in await conn.execute(
            select(Choice.user_id, Choice.message_id, Choice.winner).where(
                Choice.user_id.in_(user_ids), Choice.message_id.in_(message_ids)
            )
        )
    }
    outcomes: dict[Key, Outcome] = {}
    inserts, updates, deletes = [], [], []
    for key, (user_id, (a, b)) in touched.items():
        settled = settle_choice(history.get(key, []), scale)
        before = current.get((user_id, key[1]))
        if settled is None:
            if before is not None:
                deletes.append((user_id, key[1]))
                outcomes[key] = Outcome.UNCHOSEN
            continue
        winner, at = settled
        if before is None:
            inserts.append(
                {
                    "user_id": user_id,
                    "message_id": key[1],
                    "image_a_id": a,
                    "image_b_id": b,
                    "winner": winner,
                    "source": source,
                    "chosen_at": at,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            outcomes[key] = Outcome.CHOSEN
        elif before != winner:
            updates.append(
                {"u": user_id, "m": key[1], "w": winner, "src": source, "at": at, "now": now}
            )
            outcomes[key] = Outcome.CHOSEN
    if inserts:
        await conn.execute(Choice.__table__.insert(), inserts)
    if updates:
        await conn.execute(_UPDATE_CHOICE, updates)
    for user_id, message_id in deletes:
        await conn.execute(
            delete(Choice).where(and_(Choice.user_id == user_id, Choice.message_id == message_id))
        )
    return outcomes
