"""Moderation data: guild settings, bans, removed images, open flags."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Flag, GuildSettings, Image
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert, set_user_flags

__all__ = [
    "OpenFlag",
    "feed_channels",
    "get_guild_settings",
    "open_flags",
    "remove_image",
    "set_banned",
    "update_guild_settings",
]


async def set_banned(engine: AsyncEngine, discord_id: int, banned: bool, *, name: str = "") -> None:
    """Ban (or unban) a member from generating and rating."""
    await set_user_flags(engine, discord_id, name=name, banned=banned)


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


async def feed_channels(engine: AsyncEngine) -> list[tuple[int, int | None]]:
    """``(channel id, minutes between posts or None for the default)`` of every rating feed."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(GuildSettings.feed_channel_id, GuildSettings.feed_interval_minutes).where(
                GuildSettings.feed_channel_id.is_not(None)
            )
        )
        return [(int(channel), minutes) for channel, minutes in rows]


async def update_guild_settings(engine: AsyncEngine, guild_id: int, **values: object) -> None:
    """Set some of a guild's settings (allowed_channel_ids, feed_channel_id, feed_interval_minutes)."""
    now = utcnow()
    defaults = {
        "allowed_channel_ids": [],
        "feed_channel_id": None,
        "feed_interval_minutes": None,
    }
    async with engine.begin() as conn:
        await conn.execute(
            dialect_insert(engine)(GuildSettings)
            .values(guild_id=guild_id, updated_at=now, **{**defaults, **values})
            .on_conflict_do_update(index_elements=["guild_id"], set_={**values, "updated_at": now})
        )


async def remove_image(engine: AsyncEngine, message_id: int) -> Image | None:
    """Mark the image posted as ``message_id`` removed (out of every dataset); None if unknown."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                update(Image)
                .where(Image.discord_message_id == message_id)
                .values(removed=True, removed_at=utcnow())
                .returning(Image.id, Image.discord_channel_id)
            )
        ).one_or_none()
        if row is not None:
            await conn.execute(
                update(Flag)
                .where(Flag.image_id == row.id, Flag.resolved_at.is_(None))
                .values(resolved_at=utcnow(), resolution="removed")
            )
    return (
        None
        if row is None
        else Image(
            id=row.id, discord_message_id=message_id, discord_channel_id=row.discord_channel_id
        )
    )


@dataclass(frozen=True, slots=True)
class OpenFlag:
    image_id: int
    channel_id: int | None
    message_id: int | None
    reports: int


async def open_flags(engine: AsyncEngine, limit: int = 20) -> list[OpenFlag]:
    """Images with unresolved reports, most reported first."""
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
                .where(Flag.resolved_at.is_(None), Image.removed.is_(False))
                .group_by(Image.id, Image.discord_channel_id, Image.discord_message_id)
                .order_by(func.count(Flag.id).desc(), Image.id)
                .limit(limit)
            )
        ).all()
    return [OpenFlag(r[0], r[1], r[2], r[3]) for r in rows]
