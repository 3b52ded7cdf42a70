"""What a reaction means, and how ratings follow from the log: pure functions, no I/O.

:class:`~dreamrate.ratings.service.RatingService` reads the database, asks these functions
what to do, and writes what they planned, so each rule is tested directly and quickly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dreamrate.db.models import RatingEventKind
from dreamrate.ratings.scale import RatingScale

__all__ = [
    "Outcome",
    "ReactionEvent",
    "SettlePlan",
    "classify",
    "decide",
    "event_kind",
    "fits_message",
    "present_emojis",
    "reconcile_plan",
    "settle_choice",
    "settle_plan",
    "wanted_reactions",
]

_ADDS = (RatingEventKind.ADD, RatingEventKind.BACKFILL_ADD)

Key = tuple[int, int]  #: (Discord user id, image id)
Row = tuple[int, int]  #: (user row id, image id)


class Outcome(enum.StrEnum):
    """What recording one reaction did."""

    RATED = "rated"  #: the member's current rating was set or changed
    CHOSEN = "chosen"  #: the member's current choice on a comparison was set or changed
    UNCHOSEN = "unchosen"  #: the member has no choice on that comparison any more
    UNRATED = "unrated"  #: the member has no rating of the image any more
    UNCHANGED = "unchanged"  #: logged; the current rating stays as it was
    FLAGGED = "flagged"  #: the flag emoji: a report for moderators
    NOT_AN_IMAGE = "not_an_image"  #: the message is not a generated image
    NOT_A_RATING = "not_a_rating"  #: some other emoji
    BEFORE_CONSENT = "before_consent"  #: made before the member's erase or opt-in: never counts
    BOT = "bot"  #: the bot's own reaction
    BANNED = "banned"  #: banned members are not recorded
    OPTED_OUT = "opted_out"  #: members who opted out are not recorded


@dataclass(frozen=True, slots=True, kw_only=True)
class ReactionEvent:
    """A raw reaction add or remove, as the gateway (or backfill) reports it."""

    added: bool
    discord_user_id: int
    message_id: int
    emoji: str
    channel_id: int | None = None
    guild_id: int | None = None
    user_name: str = ""
    #: When the gateway delivered it: the member's own time (None for backfill's finds).
    received_at: datetime | None = None


def classify(event: ReactionEvent, scale: RatingScale, bot_user_id: int | None) -> Outcome | None:
    """What an event is before the database is asked: the bot's own or neither a rating nor
    a choice emoji (an :class:`Outcome`), or None when it needs the message and the member
    to decide."""
    if bot_user_id is not None and event.discord_user_id == bot_user_id:
        return Outcome.BOT
    if (
        event.emoji != scale.flag_emoji
        and scale.value_of(event.emoji) is None
        and scale.winner_of(event.emoji) is None
    ):
        return Outcome.NOT_A_RATING
    return None


def fits_message(event: ReactionEvent, scale: RatingScale, *, comparison: bool) -> bool:
    """Whether the emoji belongs on this kind of message: choice emoji on a comparison post,
    rating emoji and the flag on an image's post. The others are ignored."""
    return (scale.winner_of(event.emoji) is not None) == comparison


def decide(
    event: ReactionEvent,
    scale: RatingScale,
    *,
    image_id: int | None,
    banned: bool,
    opted_out: bool,
    counted_since: datetime | None = None,
) -> Outcome | None:
    """Whether an event that :func:`classify` let through is recorded: an :class:`Outcome`
    when it is not a rating to log (``FLAGGED``: a report to file), None to log it.

    An event the bot received before ``counted_since`` (the member's erase or opt-in; it
    may have waited in the inbox meanwhile) never counts."""
    if image_id is None:
        return Outcome.NOT_AN_IMAGE
    if banned:
        return Outcome.BANNED
    if opted_out:
        return Outcome.OPTED_OUT
    if (
        counted_since is not None
        and event.received_at is not None
        and event.received_at < counted_since
    ):
        return Outcome.BEFORE_CONSENT
    if event.emoji == scale.flag_emoji:
        return Outcome.FLAGGED
    return None


def event_kind(added: bool, source: str) -> RatingEventKind:
    """The log kind of a reaction added or removed, seen live or found by backfill."""
    if source == "backfill":
        return RatingEventKind.BACKFILL_ADD if added else RatingEventKind.BACKFILL_REMOVE
    return RatingEventKind.ADD if added else RatingEventKind.REMOVE


def present_emojis(events: Iterable[tuple[RatingEventKind, Any]]) -> list[Any]:
    """Replay a member's events: the rating emoji (or (message, emoji) keys) still present,
    most recent last."""
    present: dict[Any, None] = {}
    for kind, emoji in events:
        present.pop(emoji, None)
        if kind in _ADDS:
            present[emoji] = None
    return list(present)


@dataclass
class SettlePlan:
    """The writes that bring current ratings in line with the log, and what each meant."""

    #: (user, image, value, when the member chose it or None)
    inserts: list[tuple[int, int, float, datetime | None]] = field(default_factory=list)
    updates: list[tuple[int, int, float, datetime | None]] = field(default_factory=list)
    deletes: list[Row] = field(default_factory=list)  #: (user, image)
    outcomes: dict[Key, Outcome] = field(default_factory=dict)


def settle_plan(
    touched: Mapping[Key, Row],
    history: Mapping[
        Key, Sequence[tuple[RatingEventKind, tuple[int | None, str], datetime | None]]
    ],
    current: Mapping[Row, float],
    scale: RatingScale,
) -> SettlePlan:
    """Each touched member's rating of each touched image, from their replayed events
    ``(kind, (message, emoji), received_at)`` in log order.

    Replay keys are (message, emoji): an image shown in several messages is rated by the
    member's latest rating emoji on any of them; removing it falls back to another still
    present, or removes the rating. A rating's time is when the member added the emoji
    that decides it, or None when backfill found it.
    """
    plan = SettlePlan()
    for key, row in touched.items():
        events = history.get(key, [])
        added_at = {
            k: at if kind is RatingEventKind.ADD else None
            for kind, k, at in events
            if kind in _ADDS
        }
        present = present_emojis((kind, k) for kind, k, _ in events)
        before = current.get(row)
        if not present:
            if before is not None:
                plan.deletes.append(row)
                plan.outcomes[key] = Outcome.UNRATED
            continue
        value = scale.value_of(present[-1][1])
        assert value is not None  # only rating emoji are logged
        when = added_at.get(present[-1])
        if before is None:
            plan.inserts.append((*row, value, when))
            plan.outcomes[key] = Outcome.RATED
        elif before != value:
            plan.updates.append((*row, value, when))
            plan.outcomes[key] = Outcome.RATED
    return plan


def settle_choice(
    events: Sequence[tuple[RatingEventKind, str, datetime | None]], scale: RatingScale
) -> tuple[str, datetime | None] | None:
    """A member's current choice on one comparison post from their replayed events
    ``(kind, emoji, received_at)``: the winner their latest choice emoji still present says,
    and when they added it (None when backfill found it); None when no choice emoji is left."""
    present = present_emojis((kind, emoji) for kind, emoji, _ in events)
    if not present:
        return None
    at = None
    for kind, emoji, received in events:
        if emoji == present[-1] and kind in _ADDS:
            at = received if kind is RatingEventKind.ADD else None
    winner = scale.winner_of(present[-1])
    assert winner is not None  # only choice emoji are logged
    return winner, at


def wanted_reactions(
    on_discord: Mapping[str, Iterable[tuple[int, str]]],
    scale: RatingScale,
    bot_user_id: int | None,
    *,
    comparison: bool = False,
) -> tuple[dict[int, set[str]], dict[int, str]]:
    """From the reactions Discord shows on a message: each member's rating emoji there (choice
    emoji for a ``comparison`` post), and their names (the bot's own seeded reactions and
    other emoji left out)."""
    wanted: dict[int, set[str]] = {}
    names: dict[int, str] = {}
    for shown, users in on_discord.items():
        # Choice emoji in their configured form, as the log keeps them.
        emoji = (scale.choice_emoji(shown) if comparison else shown) or ""
        if (scale.winner_of(emoji) if comparison else scale.value_of(emoji)) is None:
            continue
        for user_id, name in users:
            if user_id != bot_user_id:
                wanted.setdefault(user_id, set()).add(emoji)
                names[user_id] = name
    return wanted, names


def reconcile_plan(have: set[str], target: set[str]) -> list[tuple[RatingEventKind, str]]:
    """Backfill events that turn the emoji the log has into the ones Discord shows:
    removals first, then additions (so an addition is the most recent)."""
    events = [(RatingEventKind.BACKFILL_REMOVE, e) for e in sorted(have - target)]
    return events + [(RatingEventKind.BACKFILL_ADD, e) for e in sorted(target - have)]
