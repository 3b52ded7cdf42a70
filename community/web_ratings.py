"""Rating and choosing on the web home: a click recorded exactly like a reaction.

A click on the web is a reaction on a message that exists only in the database: an image's
web "post" is message ``-image_id`` and a pair shown to one member is a comparison post
with a negative id drawn at random (Discord's ids are positive, so they never meet). Both
live in the same tables as Discord's posts, with channel :data:`WEB_CHANNEL`, so the one
rating log, its replay and every rule of :class:`~dreamrate.ratings.service.RatingService`
(bans, opt-out, erase, the flag) hold unchanged. Re-rating on the web takes the member's
earlier web emoji away first, so their rating of an image stays the last one they gave on
either side.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.community.posts import WEB_KIND
from dreamrate.community.refusals import NotFound
from dreamrate.db.models import Choice, ComparisonPost, Image, ImagePost, Job, RatingEvent, User
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert
from dreamrate.ratings.choice_log import present_choices
from dreamrate.ratings.decisions import Outcome, ReactionEvent, present_emojis
from dreamrate.ratings.policy import shown_in_guild
from dreamrate.ratings.scale import WINNERS
from dreamrate.ratings.service import RatingService

__all__ = [
    "WEB_CHANNEL",
    "WEB_KIND",
    "NotShownError",
    "WebPair",
    "choose_on_web",
    "image_guild",
    "pending_web_pair",
    "rate_on_web",
    "show_pair_on_web",
    "web_message_of",
]

#: The channel id of every web post (no Discord channel is 0).
WEB_CHANNEL = 0
#: Web pairs draw their ids below this, far from the images' ``-image_id``.
_PAIR_BASE = -(1 << 53)


class NotShownError(NotFound):
    """A choice on a pair that was never shown to this member (or no longer counts)."""


def web_message_of(image_id: int) -> int:
    """The id of an image's web post."""
    return -image_id


@dataclass(frozen=True, slots=True)
class WebPair:
    message_id: int
    left: int
    right: int


#: Images whose web post this process has made sure of: a post is never deleted but with
#: its image (cascade), so once there it stays, and the insert (a commit) is saved.
_POSTED: weakref.WeakKeyDictionary[AsyncEngine, set[int]] = weakref.WeakKeyDictionary()


async def _replace_clicks(
    service: Any,
    discord_id: int,
    message_id: int,
    guild_id: int,
    name: str,
    present: Iterable[str],
    emoji: str,
) -> Any:
    """A web click as Discord would see it: the member's present emoji on the page's stand-in
    message taken off, ``emoji`` put on, recorded together; the new click's outcome."""
    common = {
        "discord_user_id": discord_id,
        "message_id": message_id,
        "channel_id": WEB_CHANNEL,
        "guild_id": guild_id,
        "user_name": name,
    }
    now = utcnow()
    events = [ReactionEvent(added=False, emoji=e, received_at=now, **common) for e in present]
    events.append(ReactionEvent(added=True, emoji=emoji, received_at=now, **common))
    return (await service.record_many(events, source=WEB_KIND))[-1]


async def _ensure_web_post(engine: AsyncEngine, image_id: int) -> int:
    message_id = web_message_of(image_id)
    posted = _POSTED.setdefault(engine, set())
    if image_id in posted:
        return message_id
    async with engine.begin() as conn:
        await conn.execute(
            dialect_insert(engine)(ImagePost)
            .values(
                message_id=message_id,
                image_id=image_id,
                channel_id=WEB_CHANNEL,
                kind=WEB_KIND,
                posted_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
        )
    if len(posted) > 1_000_000:
        posted.clear()
    posted.add(image_id)
    return message_id


async def rate_on_web(
    service: RatingService,
    *,
    discord_id: int,
    name: str,
    guild_id: int,
    image_id: int,
    value: float,
) -> Outcome:
    """Record the member's rating ``value`` of ``image_id`` (made in ``guild_id``), as if
    they had reacted with its emoji. An image hidden since (a report, a removal, its maker
    banned) takes no rating: :attr:`Outcome.NOT_AN_IMAGE`.

    Raises
    ------
    ValueError
        when ``value`` is not on the scale.
    NotFound
        for an image the guild's members may not see (or another guild's).
    """
    scale = service.scale
    if value not in scale.values:
        raise ValueError(f"a rating is one of {', '.join(f'{v:g}' for v in scale.values)}")
    if not await image_guild(service.engine, image_id, guild_id):
        raise NotFound("No such image here.")
    emoji = scale.emojis[scale.values.index(value)]
    message_id = await _ensure_web_post(service.engine, image_id)
    async with service.engine.connect() as conn:
        rows = await conn.execute(
            select(RatingEvent.kind, RatingEvent.emoji)
            .where(RatingEvent.message_id == message_id, RatingEvent.discord_user_id == discord_id)
            .order_by(RatingEvent.id)
        )
        present = present_emojis((row.kind, row.emoji) for row in rows)
    return await _replace_clicks(service, discord_id, message_id, guild_id, name, present, emoji)


async def show_pair_on_web(
    engine: AsyncEngine, *, guild_id: int, discord_id: int, left: int, right: int
) -> WebPair:
    """Remember that the pair (``left``, ``right``) was shown to this member on the web;
    showing it again (a reload, a second tab) gives the same post while they have not
    chosen on it, so one member's choice of a pair is one choice."""
    async with engine.connect() as conn:
        again = await conn.scalar(
            select(ComparisonPost.message_id)
            .where(
                ComparisonPost.kind == WEB_KIND,
                ComparisonPost.shown_to == discord_id,
                ComparisonPost.guild_id == guild_id,
                or_(
                    and_(ComparisonPost.image_a_id == left, ComparisonPost.image_b_id == right),
                    and_(ComparisonPost.image_a_id == right, ComparisonPost.image_b_id == left),
                ),
            )
            .order_by(ComparisonPost.posted_at.desc())
            .limit(1)
        )
        if again is not None:
            row = (
                await conn.execute(
                    select(ComparisonPost.image_a_id, ComparisonPost.image_b_id).where(
                        ComparisonPost.message_id == again
                    )
                )
            ).one()
            return WebPair(int(again), int(row.image_a_id), int(row.image_b_id))
    for _ in range(3):
        message_id = _PAIR_BASE - secrets.randbits(52)
        async with engine.begin() as conn:
            done = await conn.execute(
                dialect_insert(engine)(ComparisonPost)
                .values(
                    message_id=message_id,
                    image_a_id=left,
                    image_b_id=right,
                    channel_id=WEB_CHANNEL,
                    guild_id=guild_id,
                    kind=WEB_KIND,
                    shown_to=discord_id,
                    posted_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["message_id"])
            )
        if done.rowcount:
            return WebPair(message_id, left, right)
    raise RuntimeError("could not draw a free id for a web pair")  # 2^52 ids: never


async def pending_web_pair(
    engine: AsyncEngine, *, guild_id: int, discord_id: int
) -> WebPair | None:
    """The pair last shown to this member on the web that they have not chosen on yet, while
    both images may still be shown there: a reload (or a second tab) gets it again, so
    asking for pairs over and over makes no new ones."""
    chosen = (
        select(Choice.id)
        .join(User, User.id == Choice.user_id)
        .where(Choice.message_id == ComparisonPost.message_id, User.discord_id == discord_id)
        .exists()
    )
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    ComparisonPost.message_id, ComparisonPost.image_a_id, ComparisonPost.image_b_id
                )
                .where(
                    ComparisonPost.kind == WEB_KIND,
                    ComparisonPost.shown_to == discord_id,
                    ComparisonPost.guild_id == guild_id,
                    ~chosen,
                )
                .order_by(ComparisonPost.posted_at.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        still = await conn.scalar(
            select(func.count())
            .select_from(Image)
            .join(Job, Job.id == Image.job_id)
            .where(Image.id.in_([row.image_a_id, row.image_b_id]), shown_in_guild(guild_id))
        )
    if still != 2:
        return None
    return WebPair(int(row.message_id), int(row.image_a_id), int(row.image_b_id))


async def choose_on_web(
    service: RatingService,
    *,
    discord_id: int,
    name: str,
    guild_id: int,
    message_id: int,
    winner: str,
) -> Outcome:
    """Record the member's choice (``a``, ``b`` or ``tie``) on a pair shown to them.

    Raises
    ------
    ValueError
        for a winner that is not one of the three.
    NotShownError
        when the pair was not shown to this member in ``guild_id``, or one of its images
        no longer counts (removed by a moderator since).
    """
    if winner not in WINNERS:
        raise ValueError("a choice is a (left), b (right) or tie")
    left, right = Image.__table__.alias("l"), Image.__table__.alias("r")
    async with service.engine.connect() as conn:
        shown = (
            await conn.execute(
                select(ComparisonPost.message_id)
                .join(left, left.c.id == ComparisonPost.image_a_id)
                .join(right, right.c.id == ComparisonPost.image_b_id)
                .where(
                    ComparisonPost.message_id == message_id,
                    ComparisonPost.kind == WEB_KIND,
                    ComparisonPost.shown_to == discord_id,
                    ComparisonPost.guild_id == guild_id,
                    left.c.removed.is_(False),
                    right.c.removed.is_(False),
                )
            )
        ).first()
        if shown is None:
            raise NotShownError("that pair was not shown to you")
        pair = (
            await conn.execute(
                select(ComparisonPost.image_a_id, ComparisonPost.image_b_id).where(
                    ComparisonPost.message_id == message_id
                )
            )
        ).one()
        elsewhere = await conn.scalar(
            select(Choice.id)
            .join(User, User.id == Choice.user_id)
            .where(
                User.discord_id == discord_id,
                Choice.message_id != message_id,
                Choice.source == WEB_KIND,
                or_(
                    and_(
                        Choice.image_a_id == pair.image_a_id, Choice.image_b_id == pair.image_b_id
                    ),
                    and_(
                        Choice.image_a_id == pair.image_b_id, Choice.image_b_id == pair.image_a_id
                    ),
                ),
            )
            .limit(1)
        )
        if elsewhere is not None:
            raise NotShownError("you already chose between these two")
        present = await present_choices(conn, discord_id, message_id)
    scale = service.scale
    emoji = scale.choice_emojis[WINNERS.index(winner)]
    return await _replace_clicks(service, discord_id, message_id, guild_id, name, present, emoji)


async def image_guild(engine: AsyncEngine, image_id: int, guild_id: int) -> bool:
    """Whether the image was made in ``guild_id`` and its members may see (and rate) it
    there (:func:`~dreamrate.ratings.policy.shown_in_guild`)."""
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(Image.id)
            .join(Job, Job.id == Image.job_id)
            .where(Image.id == image_id, shown_in_guild(guild_id))
        )
    return found is not None
