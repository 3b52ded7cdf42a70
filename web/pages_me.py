"""A member's own page: what dreamrate holds about them, opt-out / opt-in, and erase (the
same functions as ``/privacy``, so the same promises: erased ratings never come back)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dreamrate.ratings.privacy import erase, export_mine, set_opted_out
from dreamrate.web.context import ctx
from dreamrate.web.security import csrf_ok

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
            "notice": request.query_params.get("done", ""),
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
    form = await request.form()
    if not csrf_ok(member, str(form.get("csrf", ""))):
        raise HTTPException(403, "Refused: missing or wrong form token. Reload the page.")
    action = request.path_params["action"]
    if action == "optout":
        await set_opted_out(context.engine, member.discord_id, True, name=member.name)
        done = "You opted out: nothing you rate is recorded until you opt in again."
    elif action == "optin":
        await set_opted_out(context.engine, member.discord_id, False, name=member.name)
        done = "You opted in: what you rate from now on counts."
    elif action == "erase":
        if str(form.get("confirm", "")).strip().lower() != CONFIRM:
            raise HTTPException(400, f'Type "{CONFIRM}" to confirm; nothing was erased.')
        done = str(await erase(context.engine, member.discord_id))
    else:
        raise HTTPException(404, "No such action.")
    from urllib.parse import quote

    return RedirectResponse(f"/me?done={quote(done)}", status_code=303)
