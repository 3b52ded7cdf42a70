"""Moderation, one guild at a time: remove an image, dismiss its reports, ban and unban,
change the guild's settings; each action is written to the guild's audit log.

A guild's moderators act on their own community only: a ban holds in the guild that made
it, removals and reports concern images made there. ``/admin`` and the web home's
moderation page both call :class:`Moderation`, so the same guards hold on both (nobody
bans themselves) and both leave the same audit entries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.community.audit import AuditRow, audit, audit_log
from dreamrate.community.guild_settings import (
    check_settings,
    get_guild_settings,
    toggled,
    update_guild_settings,
)
from dreamrate.community.posts import WEB_KIND
from dreamrate.community.refusals import BadValue, NotAllowed, NotFound
from dreamrate.db.models import (
    ComparisonPost,
    Flag,
    GuildBan,
    Image,
    ImagePost,
    Job,
    User,
)
from dreamrate.db.retry import retry_on_disconnect
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert, ensure_user

if TYPE_CHECKING:
    from dreamrate.community.members import Member
    from dreamrate.db.models import GuildSettings

__all__ = [
    "DeleteMessages",
    "Moderation",
    "OpenFlag",
    "RemovedImage",
    "dismiss_reports",
    "guild_bans",
    "is_banned_in",
    "open_flags",
    "remove_image",
    "set_banned",
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


@dataclass(frozen=True, slots=True)
class RemovedImage:
    """The image a moderator removed, and every message that shows it (its own, reposts)."""

    id: int
    messages: list[tuple[int, int]]  #: (channel id, message id)


def _shown_as(message_id: int) -> ColumnElement[bool]:
    """On ``Image``: shown as ``message_id`` (its own message or a repost)."""
    reposted = select(ImagePost.image_id).where(ImagePost.message_id == message_id)
    return or_(Image.discord_message_id == message_id, Image.id.in_(reposted))


def _which(message_id: int | None, image_id: int | None) -> ColumnElement[bool]:
    if (message_id is None) == (image_id is None):
        raise TypeError("name the image by its message_id or its image_id, not both")
    return _shown_as(message_id) if message_id is not None else Image.id == image_id


async def remove_image(
    engine: AsyncEngine,
    guild_id: int,
    *,
    message_id: int | None = None,
    image_id: int | None = None,
) -> RemovedImage | None:
    """Mark the image (named by a message that shows it, or by its id) removed, out of every
    dataset, and close its reports; None when no image made in ``guild_id`` is that one."""
    return await _remove(engine, guild_id, _which(message_id, image_id))


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


async def dismiss_reports(
    engine: AsyncEngine,
    guild_id: int,
    *,
    message_id: int | None = None,
    image_id: int | None = None,
) -> tuple[int, int] | None:
    """Close the open reports of the image (named by a message that shows it, or by its id)
    made in ``guild_id``, as reviewed and not upheld: ``(image id, reports closed)``, or
    None when no such image is there."""
    async with engine.begin() as conn:
        found = await conn.scalar(
            select(Image.id)
            .join(Job, Job.id == Image.job_id)
            .where(_which(message_id, image_id), Job.guild_id == guild_id)
        )
        if found is None:
            return None
        closed = await conn.execute(
            update(Flag)
            .where(Flag.image_id == found, Flag.resolved_at.is_(None))
            .values(resolved_at=utcnow(), resolution="dismissed")
        )
    return int(found), closed.rowcount or 0


async def guild_bans(engine: AsyncEngine, guild_id: int) -> list[dict[str, Any]]:
    """The members banned in ``guild_id``, the latest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(User.discord_id, User.name, GuildBan.created_at)
            .join(User, User.id == GuildBan.user_id)
            .where(GuildBan.guild_id == guild_id)
            .order_by(GuildBan.created_at.desc())
        )
        return [{"discord_id": r.discord_id, "name": r.name, "at": r.created_at} for r in rows]


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


#: Deletes the Discord messages ``(channel id, message id)`` of a removed image, as the
#: adapter can (the bot's client, or the web with the bot's token); how many went.
DeleteMessages = Callable[[list[tuple[int, int]]], Awaitable[int]]


class Moderation:
    """What a guild's moderators do, from ``/admin`` (``source="discord"``) or the web home
    (``source="web"``); every action lands in the guild's audit log.

    Parameters
    ----------
    engine
        The database.
    max_best_of
        The most candidates per image the settings allow (a guild's default stays within).
    predictor_active
        Whether a predictor is active now (a guild's best-of default needs one); read
        from the database when left out.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_best_of: int = 1,
        predictor_active: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.engine = engine
        self.max_best_of = max_best_of
        self._predictor_active = predictor_active or self._active_in_database

    async def _active_in_database(self) -> bool:
        from dreamrate.aesthetic.predictor_registry import active_predictor_path

        return await active_predictor_path(self.engine) is not None

    async def _audit(
        self, guild_id: int, actor: Member, source: str, action: str, target: str, **detail: Any
    ) -> None:
        await retry_on_disconnect(
            lambda: audit(
                self.engine,
                guild_id=guild_id,
                actor_discord_id=actor.discord_id,
                actor_name=actor.name,
                action=action,
                target=target,
                source=source,
                detail=detail,
            )
        )

    async def ban(
        self, guild_id: int, actor: Member, target: Member, *, banned: bool, source: str
    ) -> None:
        """|coro| Ban ``target`` from generating and rating in ``guild_id`` (or lift the ban).

        Raises
        ------
        BadValue
            for a moderator banning themselves (they would lock themselves out).
        """
        if banned and target.discord_id == actor.discord_id:
            raise BadValue("You cannot ban yourself.")
        await retry_on_disconnect(
            lambda: set_banned(self.engine, guild_id, target.discord_id, banned, name=target.name)
        )
        action = "ban" if banned else "unban"
        await self._audit(guild_id, actor, source, action, f"member {target.discord_id}")

    async def remove(
        self,
        guild_id: int,
        actor: Member,
        *,
        source: str,
        delete: DeleteMessages,
        message_id: int | None = None,
        image_id: int | None = None,
    ) -> tuple[RemovedImage, int]:
        """|coro| Remove an image (named by a message that shows it, or by its id): out of
        every dataset, its reports closed, and every message that shows it deleted with
        ``delete``. Returns the image and how many messages went.

        Raises
        ------
        NotFound
            when no image of this guild is that one.
        """
        removed = await retry_on_disconnect(
            lambda: remove_image(self.engine, guild_id, message_id=message_id, image_id=image_id)
        )
        if removed is None:
            raise NotFound(
                f"Message {message_id} is not a generated image of this server."
                if message_id is not None
                else "No such image here."
            )
        deleted = await delete(removed.messages)
        await self._audit(
            guild_id,
            actor,
            source,
            "remove",
            f"image {removed.id}",
            messages=len(removed.messages),
            messages_deleted=deleted,
        )
        return removed, deleted

    async def dismiss(
        self,
        guild_id: int,
        actor: Member,
        *,
        source: str,
        message_id: int | None = None,
        image_id: int | None = None,
    ) -> tuple[int, int]:
        """|coro| Close an image's open reports as reviewed (it stays; it was fine): its id
        and how many reports were closed.

        Raises
        ------
        NotFound
            when no image of this guild is that one, or it has no open report.
        """
        found = await retry_on_disconnect(
            lambda: dismiss_reports(self.engine, guild_id, message_id=message_id, image_id=image_id)
        )
        if found is None and message_id is not None:
            raise NotFound(f"Message {message_id} is not a generated image of this server.")
        if found is None or not found[1]:
            raise NotFound("No open report on that image here.")
        await self._audit(guild_id, actor, source, "dismiss", f"image {found[0]}", reports=found[1])
        return found

    async def settings(self, guild_id: int) -> GuildSettings | None:
        """|coro| The guild's settings (None: never set)."""
        return await retry_on_disconnect(lambda: get_guild_settings(self.engine, guild_id))

    async def change_settings(
        self, guild_id: int, actor: Member, *, source: str, **changes: Any
    ) -> GuildSettings:
        """|coro| Set some of the guild's settings (the others stay), within their ranges;
        a default best-of above one needs an active predictor to pick with.

        Raises
        ------
        BadValue
            one sentence naming the value out of range.
        """
        checked = check_settings(changes, max_best_of=self.max_best_of)
        if (checked.get("best_of") or 1) > 1 and not await retry_on_disconnect(
            self._predictor_active
        ):
            raise NotAllowed(
                "candidates: no predictor is active to pick the best (a maintainer trains "
                "one with `dreamrate train`)."
            )
        await retry_on_disconnect(lambda: update_guild_settings(self.engine, guild_id, **checked))
        await self._audit(guild_id, actor, source, "settings", "guild settings", **checked)
        current = await self.settings(guild_id)
        assert current is not None
        return current

    async def toggle_channel(
        self, guild_id: int, actor: Member, channel_id: int, *, source: str
    ) -> list[int]:
        """|coro| Allow requests in ``channel_id`` (or stop allowing them there); the
        channels allowed after (none: every channel)."""
        current = await self.settings(guild_id)
        allowed = toggled(current.allowed_channel_ids if current else [], channel_id)
        await self.change_settings(guild_id, actor, source=source, allowed_channel_ids=allowed)
        return allowed

    async def flags(self, guild_id: int, limit: int = 20) -> list[OpenFlag]:
        """|coro| The guild's images with open reports, most reported first."""
        return await retry_on_disconnect(lambda: open_flags(self.engine, guild_id, limit))

    async def log(self, guild_id: int) -> list[AuditRow]:
        """|coro| The guild's latest moderation actions."""
        return await retry_on_disconnect(lambda: audit_log(self.engine, guild_id))
