"""Who counts: the one rule for which members' ratings and which images are used or shared.

Every reader of ratings goes through here: training, ``ratings export``, ``export
dataset``, ``/stats`` and the pool of images shown for rating. A member counts unless they
are banned, opted out or erased their data; an image counts unless a moderator removed it,
and anything that leaves the database (exports, datasets, posts to Discord) also leaves
out the images the safety checker flagged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select

from dreamrate.db.models import Image, Rating, User

__all__ = ["counted_image", "counted_member", "counted_ratings", "excluded_members"]


def counted_member() -> ColumnElement[bool]:
    """A condition on ``User``: the member's ratings and generations may be used."""
    return User.banned.is_(False) & User.opted_out.is_(False) & User.erased_at.is_(None)


def excluded_members() -> Select[Any]:
    """Ids of the members who do not count (for ``NOT IN`` filters)."""
    return select(User.id).where(~counted_member())


def counted_image(*, leaving: bool) -> ColumnElement[bool]:
    """A condition on ``Image``: kept by moderators, and with ``leaving`` (exports, datasets,
    posts) also not flagged by the safety checker."""
    condition = Image.removed.is_(False)
    return condition & Image.flagged.is_(False) if leaving else condition


def counted_ratings(*columns: Any, leaving: bool) -> Select[Any]:
    """``SELECT columns`` over the current ratings that count (joined to ``Image`` and ``User``)."""
    return (
        select(*columns)
        .select_from(Rating)
        .join(Image, Image.id == Rating.image_id)
        .join(User, User.id == Rating.user_id)
        .where(counted_member(), counted_image(leaving=leaving))
    )
