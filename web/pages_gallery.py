"""The home page, a guild's gallery (with infinite scroll), an image's page, and the image
and thumbnail files (only to members of the guild the image was made in)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from dreamrate.core.errors import StorageError
from dreamrate.db.users import user_id_of
from dreamrate.generation.store import ImageUnreadable
from dreamrate.web.context import ROW_ID_MAX, ctx
from dreamrate.web.model_names import model_label
from dreamrate.web.queries import (
    GalleryQuery,
    gallery_page,
    image_detail,
    image_file,
)

__all__ = ["gallery", "gallery_more", "home", "image_page", "image_png", "thumbnail"]

logger = logging.getLogger(__name__)

PAGE = 24
#: The first cards load with the page (the first screenful: its load event waits for them);
#: the rest lazily, as they scroll into view.
EAGER = 12
#: Images and thumbnails never change under one id (the store is content-addressed);
#: ``private``: they are members-only, so no shared cache may keep them.
FILE_CACHE = "private, max-age=86400, immutable"


async def home(request: Request) -> Response:
    context = ctx(request)
    member = context.maybe_member(request)
    return context.render(request, "home.html", {"guilds": member.guilds if member else {}})


async def _model_choices(request: Request, guild_id: int) -> dict[str, tuple[str, ...]]:
    """The guild's models as the gallery names them, each with the stored models it covers."""
    context = ctx(request)
    registered = await context.model_names.get()
    choices: dict[str, tuple[str, ...]] = {}
    for model in await context.rankings.models(guild_id):
        label = model_label(model, registered)
        choices[label] = (*choices.get(label, ()), model)
    return choices


def _query(
    request: Request, user_id: int | None, models: dict[str, tuple[str, ...]]
) -> GalleryQuery:
    params = request.query_params
    sort = params.get("sort", "top")
    if sort not in ("top", "predicted", "new"):
        raise HTTPException(400, "sort is top, predicted or new")
    since = None
    if params.get("since"):
        try:
            since = datetime.fromisoformat(params["since"]).replace(tzinfo=UTC)
        except ValueError as exc:
            raise HTTPException(400, "since is a date, YYYY-MM-DD") from exc
    text = params.get("q", "").strip()
    if len(text) > 200:
        raise HTTPException(400, "the prompt filter is at most 200 characters")
    return GalleryQuery(
        sort=sort,
        text=text,
        model=params.get("model", ""),
        models=models.get(params.get("model", ""), ()),
        since=since,
        unrated_by=(user_id if user_id is not None else -1) if params.get("unrated") else None,
        cursor=params.get("cursor", ""),
        limit=PAGE,
    )


async def _page(
    request: Request, guild_id: int
) -> tuple[dict[str, object], GalleryQuery, list[str]]:
    context = ctx(request)
    member = context.guild_member(request, guild_id)
    user_id = await user_id_of(context.engine, member.discord_id)
    models = await _model_choices(request, guild_id)
    query = _query(request, user_id, models)
    predictor = await context.predictor.get() if query.sort == "predicted" else None
    if query.sort == "predicted" and predictor is None:
        raise HTTPException(400, "No predictor is active yet (dreamrate train makes one).")
    try:
        cards, cursor = await gallery_page(
            context.engine, guild_id, query, context.rankings, predictor
        )
    except ValueError as exc:
        raise HTTPException(400, "that page does not exist (a bad cursor)") from exc
    page = {"cards": cards, "cursor": cursor, "guild_id": guild_id, "eager": EAGER}
    return page, query, sorted(models)


def _more_link(request: Request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    params = dict(request.query_params)
    params["cursor"] = cursor
    return f"{request.url.path.removesuffix('/more')}/more?{urlencode(params)}"


async def gallery(request: Request) -> Response:
    guild_id = request.path_params["guild_id"]
    context = ctx(request)
    page, query, models = await _page(request, guild_id)
    member = context.member(request)
    return context.render(
        request,
        "gallery.html",
        {
            **page,
            "query": query,
            "guild_name": member.guilds[guild_id][0],
            "moderator": member.moderates(guild_id),
            "models": models,
            "more": _more_link(request, page["cursor"]),  # type: ignore[arg-type]
            "unrated": bool(request.query_params.get("unrated")),
        },
    )


async def gallery_more(request: Request) -> Response:
    """The next cards, as an HTML fragment the page appends (infinite scroll)."""
    guild_id = request.path_params["guild_id"]
    page, _, _ = await _page(request, guild_id)
    response = ctx(request).render(
        request,
        "_cards.html",
        # Appended below the fold: every card of a later page loads lazily.
        {**page, "eager": 0, "more": _more_link(request, page["cursor"])},  # type: ignore[arg-type]
    )
    return response


async def image_page(request: Request) -> Response:
    guild_id, image_id = request.path_params["guild_id"], request.path_params["image_id"]
    context = ctx(request)
    member = context.guild_member(request, guild_id)
    if image_id > ROW_ID_MAX:
        raise HTTPException(404, "No such image here.")
    user_id = await user_id_of(context.engine, member.discord_id)
    detail = await image_detail(context.engine, image_id, member_user_id=user_id)
    if detail is None or detail.guild_id != guild_id:
        raise HTTPException(404, "No such image here.")
    most = max(detail.distribution.values(), default=0)
    model = model_label(detail.model, await context.model_names.get())
    return context.render(
        request,
        "image.html",
        {"image": detail, "model": model, "guild_id": guild_id, "most": most},
    )


async def _file_of(request: Request) -> tuple[str, str]:
    """(path in the store, sha256) of an image the member may see, else 404."""
    context = ctx(request)
    member = context.member(request)
    if request.path_params["image_id"] > ROW_ID_MAX:
        raise HTTPException(404, "No such image.")
    found = await image_file(context.engine, request.path_params["image_id"], member.moderates)
    if found is None or not member.member_of(found[0]):
        raise HTTPException(404, "No such image.")
    return found[1], found[2]


async def image_png(request: Request) -> Response:
    relative, sha256 = await _file_of(request)
    # The file is named by its content: its hash is its version, from any store.
    etag = f'"{sha256}"'
    headers = {"Cache-Control": FILE_CACHE, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    try:
        data = await asyncio.to_thread(ctx(request).store.read, relative)
    except ImageUnreadable:
        raise HTTPException(404, "No such image.") from None
    except StorageError as exc:
        logger.error("image %s: %s", relative, exc.message)
        raise HTTPException(503, "The images cannot be reached just now.") from None
    return Response(data, media_type="image/png", headers=headers)


async def thumbnail(request: Request) -> Response:
    context = ctx(request)
    relative, sha256 = await _file_of(request)
    try:
        path = await context.thumbnails.get(sha256, relative)
    except ImageUnreadable:
        raise HTTPException(404, "No such image.") from None
    except StorageError as exc:
        logger.error("thumbnail of %s: %s", relative, exc.message)
        raise HTTPException(503, "The images cannot be reached just now.") from None
    return FileResponse(path, media_type="image/webp", headers={"Cache-Control": FILE_CACHE})
