"""Rating in the browser: one image or one pair at a time, from the same rating queue as
``/rate`` and ``/compare`` (:mod:`dreamrate.community.rating_queue`); each click is an event
in the same log (``source = web``, :mod:`dreamrate.community.web_ratings`).

The pages load the next image or pair as JSON and post each click as JSON with the
session's CSRF token in ``X-CSRF-Token``. Answers: 200 with the outcome, 400 for anything
but an image's integer id and an integer of the scale (``true``, ``"5"``, ``5.5``, ``18.9``),
403 for a banned or opted-out member, 404 for an image or pair that is not theirs to rate
(a pair also once one of its images is no longer shown), 413 for a body past 4 KB, 429 past
the click throttle: nothing is recorded on any of those.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dreamrate.community.refusals import NotFound
from dreamrate.community.web_ratings import choose_on_web, rate_on_web
from dreamrate.db.users import user_id_of
from dreamrate.ratings.decisions import Outcome
from dreamrate.ratings.scale import RatingScale
from dreamrate.web.bodies import read_json_object
from dreamrate.web.context import MAX_ID, ROW_ID_MAX, ctx, json_error
from dreamrate.web.queries import image_detail
from dreamrate.web.security import LoggedIn, csrf_ok

__all__ = ["choose", "compare_next", "compare_page", "rate", "rate_next", "rate_page"]

REFUSED = {
    Outcome.BANNED: "You are banned from rating in this server.",
    Outcome.OPTED_OUT: "You opted out of ratings: opt in on your privacy page first.",
    Outcome.NOT_AN_IMAGE: "That image is no longer shown.",
}


async def rate_page(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = context.guild_member(request, guild_id)
    return context.render(
        request, "rate.html", {"guild_id": guild_id, "guild_name": member.guilds[guild_id][0]}
    )


async def compare_page(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = context.guild_member(request, guild_id)
    return context.render(
        request, "compare.html", {"guild_id": guild_id, "guild_name": member.guilds[guild_id][0]}
    )


async def rate_next(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = context.guild_member(request, guild_id)
    image_id = await context.queue.next_image(guild_id, member.discord_id)
    if image_id is None:
        return JSONResponse({"image": None})
    user_id = await user_id_of(context.engine, member.discord_id)
    detail = await image_detail(context.engine, image_id, member_user_id=user_id)
    if detail is None:
        return JSONResponse({"image": None})
    return JSONResponse(
        {
            "image": {
                "id": detail.id,
                "url": f"/img/{detail.id}.png",
                "page": f"/g/{guild_id}/i/{detail.id}",
                "prompt": detail.prompt,
                "width": detail.width,
                "height": detail.height,
            }
        }
    )


#: A pair's id as the page was given it (a string: 64-bit ids do not fit a JS number).
_PAIR_ID = re.compile(r"-?[0-9]{1,19}")


def _integer(value: Any) -> int | None:
    """``value`` when it is a JSON integer (not ``true``, ``5.0``, ``"5"``), else None."""
    return value if type(value) is int else None


def _on_scale(value: Any, scale: RatingScale) -> float | None:
    """``value`` when it is one of the scale's values, sent as an integer (as a plain number
    only where the scale has fractions), else None."""
    if type(value) is int or (type(value) is float and not value.is_integer()):
        return float(value) if float(value) in scale.values else None
    return None


def _pair_id(value: Any) -> int | None:
    """The pair's id: the string the page was given (or that integer), else None."""
    if type(value) is str and _PAIR_ID.fullmatch(value):
        return int(value)
    return _integer(value)


def _clicker(request: Request, guild_id: int) -> LoggedIn | Response:
    """The member about to click, or the refusal (CSRF, throttle)."""
    context = ctx(request)
    member = context.guild_member(request, guild_id)
    if not csrf_ok(member, request.headers.get("x-csrf-token")):
        return json_error(403, "Refused: missing or wrong CSRF token.")
    if not context.throttle.allow(member.discord_id):
        return json_error(429, "Slow down: too many clicks in a row.")
    return member


async def rate(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = _clicker(request, guild_id)
    if isinstance(member, Response):
        return member
    body = await read_json_object(request)
    if body is None:
        return json_error(400, "Send a JSON object {image_id, value}.")
    image_id = _integer(body.get("image_id"))
    if image_id is None:
        return json_error(400, "image_id is the image's id (an integer).")
    value = _on_scale(body.get("value"), context.scale)
    if value is None:
        allowed = ", ".join(f"{v:g}" for v in context.scale.values)
        return json_error(400, f"A rating is one of {allowed}.")
    if not 0 < image_id <= ROW_ID_MAX:
        return json_error(404, "No such image here.")
    try:
        outcome = await rate_on_web(
            context.service,
            discord_id=member.discord_id,
            name=member.name,
            guild_id=guild_id,
            image_id=image_id,
            value=value,
        )
    except NotFound as exc:
        return json_error(404, exc.message)
    if outcome in REFUSED:
        return json_error(403 if outcome is not Outcome.NOT_AN_IMAGE else 404, REFUSED[outcome])
    return JSONResponse({"outcome": str(outcome), "image_id": image_id, "value": value})


async def compare_next(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = context.guild_member(request, guild_id)
    shown = await context.queue.next_pair(guild_id, member.discord_id)
    if shown is None:
        return JSONResponse({"pair": None})
    left, right = shown.left, shown.right
    return JSONResponse(
        {
            "pair": {
                "id": str(shown.message_id),
                "left": {"id": left, "url": f"/img/{left}.png"},
                "right": {"id": right, "url": f"/img/{right}.png"},
            }
        }
    )


async def choose(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    member = _clicker(request, guild_id)
    if isinstance(member, Response):
        return member
    body = await read_json_object(request)
    if body is None:
        return json_error(400, "Send a JSON object {pair, winner}.")
    winner = body.get("winner")
    if type(winner) is not str or winner not in ("a", "b", "tie"):
        return json_error(400, "winner is a (left), b (right) or tie.")
    message_id = _pair_id(body.get("pair"))
    if message_id is None:
        return json_error(400, "pair is the id the page was given.")
    if not -MAX_ID <= message_id <= MAX_ID:
        return json_error(404, "that pair was not shown to you.")
    try:
        outcome = await choose_on_web(
            context.service,
            discord_id=member.discord_id,
            name=member.name,
            guild_id=guild_id,
            message_id=message_id,
            winner=str(winner),
        )
    except NotFound as exc:
        return json_error(404, f"{exc.message}.")
    if outcome is Outcome.NOT_AN_IMAGE:
        # A pair with an image hidden since it was shown (reported, removed, its maker
        # banned here) takes no choice: the rule is the recording's.
        return json_error(404, "That pair is no longer shown: choose on the next one.")
    if outcome in REFUSED:
        return json_error(403, REFUSED[outcome])
    return JSONResponse({"outcome": str(outcome), "winner": winner})
