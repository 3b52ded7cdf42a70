"""A guild's settings: what its moderators may set, in which ranges, and where it is kept.

The ranges are written once, here: ``/admin`` takes its options' bounds from them and the
web home's moderation page checks its form with :func:`check_settings`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.community.refusals import BadValue
from dreamrate.db.models import GuildSettings
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert

__all__ = [
    "FEED_COMPARE_PERCENT",
    "FEED_MINUTES",
    "MAX_BLOCKED_TERMS",
    "MAX_CHANNEL_ID",
    "MAX_TERM_CHARS",
    "SETTINGS",
    "check_settings",
    "feed_channels",
    "get_guild_settings",
    "split_terms",
    "toggled",
    "update_guild_settings",
]

#: Minutes between two posts of a rating feed (a week at most).
FEED_MINUTES = (1, 10_080)
#: Percent of a feed's posts that ask to choose between two images.
FEED_COMPARE_PERCENT = (0, 100)
#: A guild's own blocked terms: how many, and how long each.
MAX_BLOCKED_TERMS, MAX_TERM_CHARS = 500, 100
#: Discord's ids are 64-bit signed in the database: a bigger one is no channel.
MAX_CHANNEL_ID = 2**63 - 1
#: What a guild's moderators may set.
SETTINGS = (
    "allowed_channel_ids",
    "feed_channel_id",
    "feed_interval_minutes",
    "feed_compare_percent",
    "feed_arena",
    "blocked_terms",
    "best_of",
)


def split_terms(text: str) -> list[str]:
    """Blocked terms as a moderator types them: separated by commas or lines."""
    return [t.strip() for t in text.replace("\r", "").replace("\n", ",").split(",") if t.strip()]


def _channel(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_CHANNEL_ID


def check_settings(changes: Mapping[str, Any], *, max_best_of: int) -> dict[str, Any]:
    """``changes`` to a guild's settings, checked (pure); blocked terms come back without
    repeats. None leaves a number or channel unset (the default).

    Raises
    ------
    BadValue
        one sentence naming what is out of range.
    """
    unknown = set(changes) - set(SETTINGS)
    if unknown:
        raise BadValue(f"no such setting: {', '.join(sorted(unknown))}.")
    checked = dict(changes)
    allowed = checked.get("allowed_channel_ids")
    if allowed is not None and not all(_channel(c) for c in allowed):
        raise BadValue("allowed channels are Discord channel ids.")
    feed = checked.get("feed_channel_id")
    if feed is not None and not _channel(feed):
        raise BadValue("the feed channel is a Discord channel id.")
    minutes = checked.get("feed_interval_minutes")
    if minutes is not None and not FEED_MINUTES[0] <= minutes <= FEED_MINUTES[1]:
        raise BadValue(f"the feed interval is {FEED_MINUTES[0]} to {FEED_MINUTES[1]} minutes.")
    compare = checked.get("feed_compare_percent")
    if compare is not None and not FEED_COMPARE_PERCENT[0] <= compare <= FEED_COMPARE_PERCENT[1]:
        raise BadValue(
            f"the comparison share is {FEED_COMPARE_PERCENT[0]} to {FEED_COMPARE_PERCENT[1]} percent."
        )
    terms = checked.get("blocked_terms")
    if terms is not None:
        terms = [str(t).strip() for t in terms if str(t).strip()]
        if len(terms) > MAX_BLOCKED_TERMS or any(len(t) > MAX_TERM_CHARS for t in terms):
            raise BadValue(
                f"at most {MAX_BLOCKED_TERMS} blocked terms of up to {MAX_TERM_CHARS} "
                "characters each."
            )
        checked["blocked_terms"] = list(dict.fromkeys(terms))
    best_of = checked.get("best_of")
    if best_of is not None and not 1 <= best_of <= max_best_of:
        raise BadValue(f"candidates: must be between 1 and {max_best_of}, got {best_of}.")
    return checked


def toggled(channels: Iterable[int], channel_id: int) -> list[int]:
    """``channels`` with ``channel_id`` added, or taken out when it was there."""
    listed = list(channels)
    return [c for c in listed if c != channel_id] if channel_id in listed else [*listed, channel_id]


async def get_guild_settings(engine: AsyncEngine, guild_id: int) -> GuildSettings | None:
    """``guild_id``'s settings (detached), or None when its moderators never set any."""
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
