"""Who counts: the one rule for which members' ratings and which images are used or shared.

Every reader of ratings goes through here: training, ``ratings export``, ``export
dataset``, ``/stats`` and the pool of images shown for rating. A member counts unless they
are banned or opted out; erasing deleted everything they had rated, and the images they
requested before erasing never count again. A member banned by one guild's moderators does
not count for that guild's images (and still counts elsewhere). An image counts unless a
moderator removed it or it is a best-of-N candidate the predictor passed over (never
shown), and anything that leaves the database (exports, datasets, posts to
Discord) also leaves out the images the safety checker flagged and those with a member's
report still open. Each guild is its own
community: readers that serve one guild pass it, maintainer exports may pass several.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, select
from sqlalchemy.orm import aliased

from dreamrate.db.models import Choice, Flag, GuildBan, Image, Job, Rating, User

__all__ = [
    "counted_choices",
    "counted_image",
    "counted_job",
    "counted_member",
    "counted_ratings",
    "in_guilds",
    "shown_in_guild",
]


def counted_member() -> ColumnElement[bool]:
    """A condition on ``User``: not banned everywhere, not opted out.

    Erasing deleted everything a member had rated, so every rating of theirs still there
    was made afterwards and counts; what they requested before erasing does not
    (:func:`counted_job`)."""
    return User.banned.is_(False) & User.opted_out.is_(False)


def _banned_here(user_id: Any) -> ColumnElement[bool]:
    return exists().where(GuildBan.user_id == user_id, GuildBan.guild_id == Job.guild_id)


def counted_job() -> ColumnElement[bool]:
    """A condition on ``Job`` (joined to its requester ``User``): the requester counts, in
    the job's guild, and did not erase their data after requesting it."""
    before_erase = User.erased_at.is_not(None) & (Job.created_at <= User.erased_at)
    return counted_member() & ~_banned_here(Job.requester_id) & ~before_erase


def _made_before_erase(image: Any) -> ColumnElement[bool]:
    """The image's requester erased their data after requesting it."""
    requester, job = aliased(User), aliased(Job)
    return exists().where(
        job.id == image.job_id,
        requester.id == job.requester_id,
        requester.erased_at.is_not(None),
        job.created_at <= requester.erased_at,
    )


def _image_counts(image: Any, *, leaving: bool) -> ColumnElement[bool]:
    # A best-of-N candidate the predictor passed over was never shown to anyone.
    condition = image.removed.is_(False) & image.passed_over.is_(False) & ~_made_before_erase(image)
    if not leaving:
        return condition
    reported = exists().where(Flag.image_id == image.id, Flag.resolved_at.is_(None))
    return condition & image.flagged.is_(False) & ~reported


@functools.cache
def counted_image(*, leaving: bool) -> ColumnElement[bool]:
    """A condition on ``Image``: kept by moderators, and with ``leaving`` (exports, datasets,
    posts) also not flagged by the safety checker, and with no member report waiting for a
    moderator (an upheld report removes the image; a dismissed one no longer counts)."""
    return _image_counts(Image, leaving=leaving)


@functools.lru_cache(maxsize=4096)
def shown_in_guild(guild_id: int, *, to_moderators: bool = False) -> ColumnElement[bool]:
    """A condition on ``Image`` joined to its ``Job``: made in ``guild_id`` and fit to show
    its members on the web home: kept, not made before the requester's erase, not by a
    member banned there (or everywhere), not flagged by the safety checker and with no
    report waiting. Its moderators, who must judge them, see every kept image of theirs."""
    if to_moderators:
        return (Job.guild_id == guild_id) & counted_image(leaving=False)
    requester_banned = exists().where(
        User.id == Job.requester_id,
        User.banned.is_(True)
        | exists().where(GuildBan.user_id == User.id, GuildBan.guild_id == guild_id),
    )
    return (Job.guild_id == guild_id) & counted_image(leaving=True) & ~requester_banned


def in_guilds(guilds: Sequence[int] | None) -> ColumnElement[bool]:
    """A condition on ``Job``: made in one of ``guilds`` (every guild for None)."""
    return Job.guild_id.in_(list(guilds)) if guilds is not None else Job.id.is_not(None)


def counted_ratings(
    *columns: Any, leaving: bool, guilds: Sequence[int] | None = None
) -> Select[Any]:
    """``SELECT columns`` over the current ratings that count (joined to ``Image``, ``Job``
    and the rater ``User``), of images made in ``guilds`` (default: all)."""
    return (
        select(*columns)
        .select_from(Rating)
        .join(Image, Image.id == Rating.image_id)
        .join(Job, Job.id == Image.job_id)
        .join(User, User.id == Rating.user_id)
        .where(
            counted_member(),
            ~_banned_here(Rating.user_id),
            counted_image(leaving=leaving),
            in_guilds(guilds),
        )
    )


def counted_choices(
    *columns: Any, leaving: bool, guilds: Sequence[int] | None = None
) -> Select[Any]:
    """``SELECT columns`` over the current choices that count (joined to the left ``Image``,
    its ``Job`` and the chooser ``User``): the same rule as :func:`counted_ratings`, and
    both images must count."""
    right = aliased(Image)
    return (
        select(*columns)
        .select_from(Choice)
        .join(Image, Image.id == Choice.image_a_id)
        .join(Job, Job.id == Image.job_id)
        .join(User, User.id == Choice.user_id)
        .where(
            counted_member(),
            ~_banned_here(Choice.user_id),
            counted_image(leaving=leaving),
            exists().where(right.id == Choice.image_b_id, _image_counts(right, leaving=leaving)),
            in_guilds(guilds),
        )
    )
