"""What every page handler shares: the services, and the checks that answer 401/403/404."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.templating import Jinja2Templates

from dreamrate.aesthetic.active import ActivePredictor
from dreamrate.community.moderation import Moderation
from dreamrate.community.rating_queue import RatingQueue
from dreamrate.community.refusals import BadValue, NotAllowed, NotFound
from dreamrate.core.errors import DreamrateError
from dreamrate.core.settings import Settings
from dreamrate.generation.store import ImageStore
from dreamrate.ratings.scale import RatingScale
from dreamrate.ratings.service import RatingService
from dreamrate.web.discord_api import DiscordAPI
from dreamrate.web.model_names import ModelNames
from dreamrate.web.queries import ROW_ID_MAX
from dreamrate.web.ranking import RankingCache
from dreamrate.web.security import ClickThrottle, LoggedIn, logged_in
from dreamrate.web.thumbs import Thumbnails

__all__ = ["MAX_ID", "ROW_ID_MAX", "WebContext", "ctx", "json_error", "refused"]

TEMPLATES = Path(__file__).parent / "templates"
#: Discord's ids are 64-bit signed in the database: a bigger one is no id at all (not a 500).
MAX_ID = 2**63 - 1


class NotLoggedIn(Exception):
    """Raised by :meth:`WebContext.member`: pages redirect to the login, APIs answer 401."""


@dataclass
class WebContext:
    settings: Settings
    engine: AsyncEngine
    discord: DiscordAPI
    scale: RatingScale
    service: RatingService
    moderation: Moderation
    queue: RatingQueue
    thumbnails: Thumbnails
    store: ImageStore
    predictor: ActivePredictor
    templates: Jinja2Templates
    rankings: RankingCache
    model_names: ModelNames
    throttle: ClickThrottle = field(default_factory=ClickThrottle)
    client_id: int | None = None

    @property
    def base_url(self) -> str:
        web = self.settings.web
        return web.base_url or f"http://{web.host}:{web.port}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"

    def member(self, request: Request) -> LoggedIn:
        member = logged_in(request, self.settings.web.session_hours * 3600)
        if member is None:
            raise NotLoggedIn
        return member

    def maybe_member(self, request: Request) -> LoggedIn | None:
        return logged_in(request, self.settings.web.session_hours * 3600)

    def guild_member(self, request: Request, guild_id: int) -> LoggedIn:
        """The member, who must share ``guild_id`` with the bot (else 403)."""
        member = self.member(request)
        if not 0 < guild_id <= MAX_ID:
            raise HTTPException(404, "No such server.")
        if not member.member_of(guild_id):
            raise HTTPException(403, "You are not a member of that server (or the bot is not).")
        return member

    def moderator(self, request: Request, guild_id: int) -> LoggedIn:
        member = self.guild_member(request, guild_id)
        if member.was_moderator(guild_id) and not member.moderates(guild_id):
            raise HTTPException(
                403, "Log in again to moderate: moderator rights are read from Discord hourly."
            )
        if not member.moderates(guild_id):
            raise HTTPException(403, "Only moderators (Manage Server) can open this page.")
        return member

    def maintainer(self, request: Request) -> LoggedIn:
        member = self.member(request)
        if member.discord_id not in self.settings.web.maintainers:
            raise HTTPException(403, "Only maintainers (DREAMRATE_WEB_MAINTAINERS) can open this.")
        return member

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        status_code: int = 200,
    ) -> Response:
        member = self.maybe_member(request)
        base = {
            "member": member,
            "scale": self.scale,
            "csrf": member.csrf if member else "",
            "maintainers": self.settings.web.maintainers,
        }
        return self.templates.TemplateResponse(
            request, name, {**base, **(context or {})}, status_code=status_code
        )


def ctx(request: Request) -> WebContext:
    context: WebContext = request.app.state.ctx
    return context


def json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


#: The answer to each kind of refusal of the use cases.
_STATUS: tuple[tuple[type[DreamrateError], int], ...] = (
    (NotFound, 404),
    (NotAllowed, 403),
    (BadValue, 400),
    (DreamrateError, 400),
)


@contextmanager
def refused() -> Iterator[None]:
    """A use case's refusal as the page's answer: 404 for what is not there, 403 for what
    may not be done, 400 for a bad value; its one sentence is the message."""
    try:
        yield
    except DreamrateError as exc:
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        raise HTTPException(status, exc.message) from exc
