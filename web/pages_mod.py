"""A guild's moderation page: reports with their images, remove or dismiss, ban and unban,
the channel allow-list and the feed, the blocked terms; every action in the audit log.

The same rules as ``/admin``: the same functions change the same rows, so the bot sees a
ban or a removal at once, and a removed image's messages are deleted on Discord with the
bot's token.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dreamrate.db.models import Flag, GuildBan, Image, Job, User
from dreamrate.db.types import utcnow
from dreamrate.ratings.audit import audit, audit_log
from dreamrate.ratings.moderation import (
    get_guild_settings,
    open_flags,
    remove_image_by_id,
    set_banned,
    update_guild_settings,
)
from dreamrate.web.bodies import read_form
from dreamrate.web.context import MAX_ID, ROW_ID_MAX, ctx
from dreamrate.web.discord_api import DiscordLoginError
from dreamrate.web.notices import flash, take_notice
from dreamrate.web.security import LoggedIn, csrf_ok

__all__ = ["moderation_action", "moderation_page"]


async def _bans(request: Request, guild_id: int) -> list[dict[str, Any]]:
    async with ctx(request).engine.connect() as conn:
        rows = await conn.execute(
            select(User.discord_id, User.name, GuildBan.created_at)
            .join(User, User.id == GuildBan.user_id)
            .where(GuildBan.guild_id == guild_id)
            .order_by(GuildBan.created_at.desc())
        )
        return [{"discord_id": r.discord_id, "name": r.name, "at": r.created_at} for r in rows]


async def moderation_page(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = context.moderator(request, guild_id)
    settings = await get_guild_settings(context.engine, guild_id)
    return context.render(
        request,
        "moderation.html",
        {
            "guild_id": guild_id,
            "guild_name": member.guilds[guild_id][0],
            "flags": await open_flags(context.engine, guild_id, limit=50),
            "bans": await _bans(request, guild_id),
            "settings": settings,
            "blocked_terms": context.settings.generation.blocked_terms,
            "log": await audit_log(context.engine, guild_id),
            "notice": take_notice(request),
        },
    )


def _int(
    form: FormData, name: str, *, optional: bool = False, largest: int = MAX_ID, smallest: int = 1
) -> int | None:
    """The form's field ``name`` as a number from ``smallest`` to ``largest`` (else 400)."""
    raw = str(form.get(name, "")).strip()
    if not raw and optional:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise HTTPException(400, f"{name} must be a number (an id).")
    value = int(raw)
    if not smallest <= value <= largest:
        raise HTTPException(400, f"{name} must be a number from {smallest} to {largest}.")
    return value


async def _remove(request: Request, member: LoggedIn, guild_id: int, form: FormData) -> None:
    context = ctx(request)
    image_id = _int(form, "image_id", largest=ROW_ID_MAX)
    assert image_id is not None
    removed = await remove_image_by_id(context.engine, guild_id, image_id)
    if removed is None:
        raise HTTPException(404, "No such image here.")
    deleted = 0
    for channel_id, message_id in removed.messages:
        deleted += await context.discord.delete_message(channel_id, message_id)
    await audit(
        context.engine,
        guild_id=guild_id,
        actor_discord_id=member.discord_id,
        actor_name=member.name,
        action="remove",
        target=f"image {image_id}",
        detail={"messages_deleted": deleted, "messages": len(removed.messages)},
    )
    flash(request, "removed", image=image_id, deleted=deleted)


async def _dismiss(request: Request, member: LoggedIn, guild_id: int, form: FormData) -> None:
    context = ctx(request)
    image_id = _int(form, "image_id", largest=ROW_ID_MAX)
    assert image_id is not None
    async with context.engine.begin() as conn:
        in_guild = (
            select(Image.id).join(Job, Job.id == Image.job_id).where(Job.guild_id == guild_id)
        )
        closed = await conn.execute(
            update(Flag)
            .where(
                Flag.image_id == image_id, Flag.image_id.in_(in_guild), Flag.resolved_at.is_(None)
            )
            .values(resolved_at=utcnow(), resolution="dismissed")
        )
    if not closed.rowcount:
        raise HTTPException(404, "No open report on that image here.")
    await audit(
        context.engine,
        guild_id=guild_id,
        actor_discord_id=member.discord_id,
        actor_name=member.name,
        action="dismiss",
        target=f"image {image_id}",
        detail={"reports": closed.rowcount},
    )
    flash(request, "dismissed", reports=closed.rowcount, image=image_id)


async def _ban(
    request: Request, member: LoggedIn, guild_id: int, form: FormData, banned: bool
) -> None:
    context = ctx(request)
    target = _int(form, "discord_id")
    assert target is not None
    if banned and target == member.discord_id:
        raise HTTPException(400, "You cannot ban yourself.")
    await set_banned(context.engine, guild_id, target, banned)
    action = "ban" if banned else "unban"
    await audit(
        context.engine,
        guild_id=guild_id,
        actor_discord_id=member.discord_id,
        actor_name=member.name,
        action=action,
        target=f"member {target}",
    )
    flash(request, "banned" if banned else "unbanned", member=target)


async def _settings(request: Request, member: LoggedIn, guild_id: int, form: FormData) -> None:
    context = ctx(request)
    raw = str(form.get("allowed_channel_ids", "")).replace(",", " ").split()
    try:
        allowed = [int(c) for c in raw]
    except ValueError:
        raise HTTPException(400, "allowed channels are Discord channel ids.") from None
    if not all(0 < c <= MAX_ID for c in allowed):
        raise HTTPException(400, "allowed channels are Discord channel ids.")
    feed_channel = _int(form, "feed_channel_id", optional=True)
    minutes = _int(form, "feed_interval_minutes", optional=True)
    compare = _int(form, "feed_compare_percent", optional=True, smallest=0)
    for channel in {*allowed, *([feed_channel] if feed_channel is not None else [])}:
        try:
            owner = await context.discord.channel_guild(channel)
        except DiscordLoginError as exc:
            raise HTTPException(
                502, f"Cannot check channel {channel} with Discord: {exc}"
            ) from None
        if owner != guild_id:
            raise HTTPException(400, f"Channel {channel} is not a text channel of this server.")
    if minutes is not None and not 1 <= minutes <= 10_080:
        raise HTTPException(400, "the feed interval is 1 to 10080 minutes.")
    if compare is not None and not 0 <= compare <= 100:
        raise HTTPException(400, "the comparison share is 0 to 100 percent.")
    terms = [
        t.strip()
        for t in str(form.get("blocked_terms", "")).replace("\r", "").replace("\n", ",").split(",")
        if t.strip()
    ]
    if len(terms) > 500 or any(len(t) > 100 for t in terms):
        raise HTTPException(400, "at most 500 blocked terms of up to 100 characters each.")
    values: dict[str, object] = {
        "blocked_terms": list(dict.fromkeys(terms)),
        "allowed_channel_ids": allowed,
        "feed_channel_id": feed_channel,
        "feed_interval_minutes": minutes,
        "feed_compare_percent": compare,
        "feed_arena": bool(form.get("feed_arena")),
    }
    await update_guild_settings(context.engine, guild_id, **values)
    await audit(
        context.engine,
        guild_id=guild_id,
        actor_discord_id=member.discord_id,
        actor_name=member.name,
        action="settings",
        target="guild settings",
        detail={k: v for k, v in values.items()},
    )
    flash(request, "settings")


async def moderation_action(request: Request) -> Response:
    guild_id, action = request.path_params["guild_id"], request.path_params["action"]
    context = ctx(request)
    member = context.moderator(request, guild_id)
    form = await read_form(request)
    if not csrf_ok(member, str(form.get("csrf", ""))):
        raise HTTPException(403, "Refused: missing or wrong form token. Reload the page.")
    if action == "remove":
        await _remove(request, member, guild_id, form)
    elif action == "dismiss":
        await _dismiss(request, member, guild_id, form)
    elif action in ("ban", "unban"):
        await _ban(request, member, guild_id, form, action == "ban")
    elif action == "settings":
        await _settings(request, member, guild_id, form)
    else:
        raise HTTPException(404, "No such action.")
    return RedirectResponse(f"/g/{guild_id}/mod", status_code=303)
