"""A guild's moderation page: reports with their images, remove or dismiss, ban and unban,
the channel allow-list and the feed, the blocked terms; every action in the audit log.

The rules are :class:`~dreamrate.community.moderation.Moderation`'s, the same ``/admin``
calls: the same guards, the same rows changed (the bot sees a ban or a removal at once),
the same audit entries. A removed image's messages are deleted on Discord with the bot's
token. This module reads the form and turns the answer into a page.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dreamrate.community.guild_settings import split_terms
from dreamrate.community.members import Member
from dreamrate.community.moderation import guild_bans
from dreamrate.web.bodies import read_form
from dreamrate.web.context import MAX_ID, ROW_ID_MAX, ctx, refused
from dreamrate.web.discord_api import DiscordLoginError
from dreamrate.web.notices import flash, take_notice
from dreamrate.web.security import LoggedIn, csrf_ok

__all__ = ["moderation_action", "moderation_page"]

#: Where the audit log says an action came from.
SOURCE = "web"


async def moderation_page(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = context.moderator(request, guild_id)
    moderation = context.moderation
    return context.render(
        request,
        "moderation.html",
        {
            "guild_id": guild_id,
            "guild_name": member.guilds[guild_id][0],
            "flags": await moderation.flags(guild_id, limit=50),
            "bans": await guild_bans(context.engine, guild_id),
            "settings": await moderation.settings(guild_id),
            "blocked_terms": context.settings.generation.blocked_terms,
            "log": await moderation.log(guild_id),
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


def _actor(member: LoggedIn) -> Member:
    return Member(member.discord_id, member.name)


async def _remove(request: Request, member: LoggedIn, guild_id: int, form: FormData) -> None:
    context = ctx(request)
    image_id = _int(form, "image_id", largest=ROW_ID_MAX)

    async def delete(messages: list[tuple[int, int]]) -> int:
        deleted = 0
        for channel_id, message_id in messages:
            deleted += await context.discord.delete_message(channel_id, message_id)
        return deleted

    removed, deleted = await context.moderation.remove(
        guild_id, _actor(member), source=SOURCE, delete=delete, image_id=image_id
    )
    flash(request, "removed", image=removed.id, deleted=deleted)


async def _dismiss(request: Request, member: LoggedIn, guild_id: int, form: FormData) -> None:
    image_id = _int(form, "image_id", largest=ROW_ID_MAX)
    found, closed = await ctx(request).moderation.dismiss(
        guild_id, _actor(member), source=SOURCE, image_id=image_id
    )
    flash(request, "dismissed", reports=closed, image=found)


async def _ban(
    request: Request, member: LoggedIn, guild_id: int, form: FormData, banned: bool
) -> None:
    target = _int(form, "discord_id")
    assert target is not None
    await ctx(request).moderation.ban(
        guild_id, _actor(member), Member(target), banned=banned, source=SOURCE
    )
    flash(request, "banned" if banned else "unbanned", member=target)


async def _settings(request: Request, member: LoggedIn, guild_id: int, form: FormData) -> None:
    """The whole form: what is left empty is unset (back to the default)."""
    context = ctx(request)
    raw = str(form.get("allowed_channel_ids", "")).replace(",", " ").split()
    try:
        allowed = [int(c) for c in raw]
    except ValueError as exc:
        raise HTTPException(400, "allowed channels are Discord channel ids.") from exc
    feed_channel = _int(form, "feed_channel_id", optional=True)
    # Only this server's text channels: a channel id is checked with Discord.
    for channel in {
        *(c for c in allowed if 0 < c <= MAX_ID),
        *([feed_channel] if feed_channel else []),
    }:
        try:
            owner = await context.discord.channel_guild(channel)
        except DiscordLoginError as exc:
            raise HTTPException(502, f"Cannot check channel {channel} with Discord: {exc}") from exc
        if owner != guild_id:
            raise HTTPException(400, f"Channel {channel} is not a text channel of this server.")
    await context.moderation.change_settings(
        guild_id,
        _actor(member),
        source=SOURCE,
        allowed_channel_ids=allowed,
        feed_channel_id=feed_channel,
        feed_interval_minutes=_int(form, "feed_interval_minutes", optional=True, smallest=0),
        feed_compare_percent=_int(form, "feed_compare_percent", optional=True, smallest=0),
        feed_arena=bool(form.get("feed_arena")),
        blocked_terms=split_terms(str(form.get("blocked_terms", ""))),
    )
    flash(request, "settings")


ACTIONS = {
    "remove": _remove,
    "dismiss": _dismiss,
    "ban": lambda request, member, guild_id, form: _ban(request, member, guild_id, form, True),
    "unban": lambda request, member, guild_id, form: _ban(request, member, guild_id, form, False),
    "settings": _settings,
}


async def moderation_action(request: Request) -> Response:
    guild_id, action = request.path_params["guild_id"], request.path_params["action"]
    context = ctx(request)
    member = context.moderator(request, guild_id)
    form = await read_form(request)
    if not csrf_ok(member, str(form.get("csrf", ""))):
        raise HTTPException(403, "Refused: missing or wrong form token. Reload the page.")
    handler = ACTIONS.get(action)
    if handler is None:
        raise HTTPException(404, "No such action.")
    with refused():
        await handler(request, member, guild_id, form)
    return RedirectResponse(f"/g/{guild_id}/mod", status_code=303)
