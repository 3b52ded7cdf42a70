"""A member's own page: what dreamrate holds about them, opt-out / opt-in, and erase (the
same functions as ``/privacy``, so the same promises: erased ratings never come back).
An erase ends the member's sessions: they log in again to go on."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dreamrate.community.privacy import erase, export_mine, set_opted_out
from dreamrate.web.bodies import read_form
from dreamrate.web.context import ctx
from dreamrate.web.notices import flash, take_notice
from dreamrate.web.security import csrf_ok
from dreamrate.web.sessions import end_member_sessions

__all__ = ["me_action", "me_data", "me_page"]

#: What the member types to confirm an erase.
CONFIRM = "erase"


async def me_page(request: Request) -> Response:
    context = ctx(request)
    member = context.member(request)
    mine = await export_mine(context.engine, member.discord_id)
    return context.render(
        request,
        "me.html",
        {
            "mine": mine,
            "notice": take_notice(request),
            "confirm": CONFIRM,
        },
    )


async def me_data(request: Request) -> Response:
    """Everything held about the member, as a JSON download (``/privacy export``)."""
    context = ctx(request)
    member = context.member(request)
    mine = await export_mine(context.engine, member.discord_id)
    return Response(
        json.dumps(mine, indent=2, default=str),
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="dreamrate-my-data.json"',
            "Cache-Control": "no-store",
        },
    )


async def me_action(request: Request) -> Response:
    context = ctx(request)
    member = context.member(request)
    form = await read_form(request)
    if not csrf_ok(member, str(form.get("csrf", ""))):
        raise HTTPException(403, "Refused: missing or wrong form token. Reload the page.")
    action = request.path_params["action"]
    if action == "optout":
        await set_opted_out(context.engine, member.discord_id, True, name=member.name)
        flash(request, "opted_out")
    elif action == "optin":
        await set_opted_out(context.engine, member.discord_id, False, name=member.name)
        flash(request, "opted_in")
    elif action == "erase":
        if str(form.get("confirm", "")).strip().lower() != CONFIRM:
            raise HTTPException(400, f'Type "{CONFIRM}" to confirm; nothing was erased.')
        erased = await erase(context.engine, member.discord_id)
        # Every session of theirs ends, in every browser (the erase would end them anyway).
        await end_member_sessions(context.engine, member.discord_id)
        request.session.clear()
        return context.render(request, "erased.html", {"erased": str(erased)})
    else:
        raise HTTPException(404, "No such action.")
    return RedirectResponse("/me", status_code=303)
