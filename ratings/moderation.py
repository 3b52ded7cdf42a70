"""Moderation data, one guild at a time: settings, bans, removed images, open flags.

A guild's moderators act on their own community only: a ban holds in the guild that made
it, removals and reports concern images made there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import (
    ComparisonPost,
    Flag,
    GuildBan,
    GuildSettings,
    Image,
    ImagePost,
    Job,
    User,
)
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert, ensure_user
from dreamrate.ratings.posts import WEB_KIND

__all__ = [
    "OpenFlag",
    "RemovedImage",
    "dismiss_reports",
    "feed_channels",
    "get_guild_settings",
    "is_banned_in",
    "open_flags",
    "remove_image",
    "remove_image_by_id",
    "set_banned",
    "update_guild_settings",
]


async def set_banned(
    engine: AsyncEngine, guild_id: int, discord_id: int, banned: bool, *, name: str = ""
) -> None:
    """Ban (or unban) a member from generating and rating in ``guild_id`` only."""
    user = await ensure_user(engine, discord_id, name)
    async with engine.begin() as conn:
        if banned:
            await conn.execute(
                dialect_insert(engine)(GuildBan)
                .values(guild_id=guild_id, user_id=user.id, created_at=utcnow())
                .on_conflict_do_nothing(index_elements=["guild_id", "user_id"])
            )
        else:
            await conn.execute(
                delete(GuildBan).where(GuildBan.guild_id == guild_id, GuildBan.user_id == user.id)
            )


async def is_banned_in(engine: AsyncEngine, guild_id: int | None, discord_id: int) -> bool:
    """Whether the member may not generate or rate in ``guild_id`` (banned there, or
    everywhere). A read that never waits for a writer (SQLite WAL)."""
    here = exists().where(GuildBan.user_id == User.id, GuildBan.guild_id == guild_id)
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(User.id).where(User.discord_id == discord_id, or_(User.banned.is_(True), here))
        )
    return found is not None


async def get_guild_settings(engine: AsyncEngine, guild_id: int) -> GuildSettings | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(GuildSettings.__table__).where(GuildSettings.guild_id == guild_id)
            )
        ).one_or_none()
    if row is None:
        return None
    return GuildSettings(**row._mapping)


async def feed_channels(engine: AsyncEngine) -> list[tuple[int, int, int | None, int]]:
    """``(guild id, channel id, minutes between posts or None for the default, percent of
    posts that are comparisons)`` of every rating feed."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                GuildSettings.guild_id,
                GuildSettings.feed_channel_id,
                GuildSettings.feed_interval_minutes,
                GuildSettings.feed_compare_percent,
            ).where(GuildSettings.feed_channel_id.is_not(None))
        )
        return [
            (int(guild), int(channel), minutes, int(percent or 0))
            for guild, channel, minutes, percent in rows
        ]


async def update_guild_settings(engine: AsyncEngine, guild_id: int, **values: object) -> None:
    """Set some of a guild's settings (allowed_channel_ids, feed_channel_id,
    feed_interval_minutes, feed_compare_percent, feed_arena, blocked_terms, best_of)."""
    now = utcnow()
    defaults = {
        "allowed_channel_ids": [],
        "feed_channel_id": None,
        "feed_interval_minutes": None,
        "feed_compare_percent": None,
        "feed_arena": None,
        "blocked_terms": None,
        "best_of": None,
    }
    async with engine.begin() as conn:
        await conn.execute(
            dialect_insert(engine)(GuildSettings)
            .values(guild_id=guild_id, updated_at=now, **{**defaults, **values})
            .on_conflict_do_update(index_elements=["guild_id"], set_={**values, "updated_at": now})
        )


@dataclass(frozen=True, slots=True)
class RemovedImage:
    """The image a moderator removed, and every message that shows it (its own, reposts)."""

    id: int
    messages: list[tuple[int, int]]  #: (channel id, message id)


async def remove_image(engine: AsyncEngine, guild_id: int, message_id: int) -> RemovedImage | None:
    """Mark the image shown as ``message_id`` (its own message or a repost) removed, out of
    every dataset; None when no image made in ``guild_id`` is shown there."""
    reposted = select(ImagePost.image_id).where(ImagePost.message_id == message_id)
    return await _remove(
        engine, guild_id, or_(Image.discord_message_id == message_id, Image.id.in_(reposted))
    )


async def remove_image_by_id(
    engine: AsyncEngine, guild_id: int, image_id: int
) -> RemovedImage | None:
    """:func:`remove_image` for an image named by its id (the web home's moderation page)."""
    return await _remove(engine, guild_id, Image.id == image_id)


async def _remove(
    engine: AsyncEngine, guild_id: int, which: ColumnElement[bool]
) -> RemovedImage | None:
    in_guild = select(Job.id).where(Job.guild_id == guild_id)
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                update(Image)
                .where(which, Image.job_id.in_(in_guild))
                .values(removed=True, removed_at=utcnow())
                .returning(Image.id, Image.discord_channel_id, Image.discord_message_id)
            )
        ).one_or_none()
        if row is None:
            return None
        await conn.execute(
            update(Flag)
            .where(Flag.image_id == row.id, Flag.resolved_at.is_(None))
            .values(resolved_at=utcnow(), resolution="removed")
        )
        reposts = await conn.execute(
            select(ImagePost.channel_id, ImagePost.message_id)
            .where(ImagePost.image_id == row.id, ImagePost.kind != WEB_KIND)
            .union_all(
                # Its comparisons end with it (their choices stop counting; see policy).
                select(ComparisonPost.channel_id, ComparisonPost.message_id).where(
                    or_(ComparisonPost.image_a_id == row.id, ComparisonPost.image_b_id == row.id),
                    ComparisonPost.kind != WEB_KIND,
                )
            )
        )
        messages = [(int(c), int(m)) for c, m in reposts]
    if row.discord_message_id is not None and row.discord_channel_id is not None:
        messages.insert(0, (int(row.discord_channel_id), int(row.discord_message_id)))
    return RemovedImage(row.id, messages)


async def dismiss_reports(engine: AsyncEngine, guild_id: int, message_id: int) -> int | None:
    """Close the open reports of the image shown as ``message_id`` in ``guild_id``, as
    reviewed and not upheld; the number closed, or None when no such image is there."""
    reposted = select(ImagePost.image_id).where(ImagePost.message_id == message_id)
    async with engine.begin() as conn:
        image_id = await conn.scalar(
            select(Image.id)
            .join(Job, Job.id == Image.job_id)
            .where(
                or_(Image.discord_message_id == message_id, Image.id.in_(reposted)),
                Job.guild_id == guild_id,
            )
        )
        if image_id is None:
            return None
        closed = await conn.execute(
            update(Flag)
            .where(Flag.image_id == image_id, Flag.resolved_at.is_(None))
            .values(resolved_at=utcnow(), resolution="dismissed")
        )
    return closed.rowcount or 0


@dataclass(frozen=True, slots=True)
class OpenFlag:
    image_id: int
    channel_id: int | None
    message_id: int | None
    reports: int


async def open_flags(engine: AsyncEngine, guild_id: int, limit: int = 20) -> list[OpenFlag]:
    """``guild_id``'s images with unresolved reports, most reported first."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    Image.id,
                    Image.discord_channel_id,
                    Image.discord_message_id,
                    func.count(Flag.id),
                )
                .join(Flag, Flag.image_id == Image.id)
                .join(Job, Job.id == Image.job_id)
                .where(
                    Flag.resolved_at.is_(None), Image.removed.is_(False), Job.guild_id == guild_id
                )
                .group_by(Image.id, Image.discord_channel_id, Image.discord_message_id)
                .order_by(func.count(Flag.id).desc(), Image.id)
                .limit(limit)
            )
        ).all()
    return [OpenFlag(r[0], r[1], r[2], r[3]) for r in rows]
