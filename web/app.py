"""The web home's ASGI app (Starlette, Jinja2 templates, a little plain JavaScript).

Pages are server-rendered; the rating pages and the gallery's infinite scroll fetch JSON or
HTML fragments with ``fetch``. No front-end build step. Every answer carries a strict
Content-Security-Policy (scripts only from this site), so a prompt holding HTML is text
twice over: Jinja2 escapes it, and the browser would not run an inline script anyway.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from dreamrate.aesthetic.active import ActivePredictor
from dreamrate.aesthetic.clip_model import model_spec
from dreamrate.community.moderation import Moderation
from dreamrate.community.rating_queue import RatingQueue
from dreamrate.core.metrics import MetricsServer
from dreamrate.core.settings import Settings
from dreamrate.generation.store import ImageStore, open_image_store
from dreamrate.ratings.scale import RatingScale
from dreamrate.ratings.service import RatingService
from dreamrate.web import auth, pages_gallery, pages_maint, pages_me, pages_mod, pages_rate
from dreamrate.web.context import TEMPLATES, NotLoggedIn, WebContext
from dreamrate.web.discord_api import DiscordAPI
from dreamrate.web.guard import Guard
from dreamrate.web.metrics import RequestMetrics, WebMetrics, serve_metrics
from dreamrate.web.model_names import ModelNames
from dreamrate.web.ranking import RankingCache
from dreamrate.web.security import load_secret_key
from dreamrate.web.sessions import SessionGate
from dreamrate.web.thumbs import Thumbnails

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def _wants_json(request: Request) -> bool:
    return (
        request.method != "GET"
        and request.headers.get("content-type", "").startswith("application/json")
    ) or request.url.path.endswith("/next")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _wants_json(request):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    context: WebContext = request.app.state.ctx
    return context.render(request, "error.html", {"message": exc.detail}, exc.status_code)


async def _health(request: Request) -> Response:
    """``/healthz`` for a load balancer, the metrics port's answer: 200 while the database
    answers, else 503 (no login needed, nothing private in it)."""
    server: MetricsServer = request.app.state.metrics_server
    answer = await server.health()
    return JSONResponse(answer, status_code=200 if answer["ready"] else 503)


async def _not_logged_in(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": "Log in first."}, status_code=401)
    context: WebContext = request.app.state.ctx
    return context.render(request, "login_needed.html", {}, 401)


def create_app(
    settings: Settings,
    engine: AsyncEngine,
    *,
    discord: DiscordAPI | None = None,
    store: ImageStore | None = None,
    metrics: WebMetrics | None = None,
) -> Starlette:
    """The web home on ``engine`` with ``settings`` (the bot's settings: one configuration),
    showing the images in ``store`` (default: the one the settings name), counting requests
    into ``metrics`` (default: a registry of its own). ``app.state.metrics_server`` serves
    them and the health checks on a port of their own once started."""
    token = settings.discord.resolved_token()
    discord = discord or DiscordAPI(
        settings.discord.api_base, token.get_secret_value() if token else None
    )
    scale = RatingScale.from_settings(settings.rating)
    store = store or open_image_store(settings)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals["scale_keys"] = list(zip("1234567890", scale.values, strict=False))
    predictor = ActivePredictor(
        engine, model_spec(settings.embedding.model, settings.embedding.pretrained)[2]
    )
    context = WebContext(
        settings=settings,
        engine=engine,
        discord=discord,
        scale=scale,
        service=RatingService(engine, scale),
        moderation=Moderation(engine, max_best_of=settings.generation.max_best_of),
        thumbnails=Thumbnails(settings.data_dir / "thumbnails", settings.web.thumbnail_size, store),
        store=store,
        predictor=predictor,
        queue=RatingQueue(engine, predictor),
        templates=templates,
        rankings=RankingCache(engine),
        model_names=ModelNames(engine),
    )
    secret = settings.web.secret_key
    key = load_secret_key(secret.get_secret_value() if secret else None, settings.data_dir)
    guild = "{guild_id:int}"
    routes = [
        Route("/", pages_gallery.home),
        Route("/healthz", _health),
        Route("/login", auth.login),
        Route("/callback", auth.callback),
        Route("/logout", auth.logout, methods=["POST"]),
        Route(f"/g/{guild}", pages_gallery.gallery),
        Route(f"/g/{guild}/more", pages_gallery.gallery_more),
        Route(f"/g/{guild}/i/{{image_id:int}}", pages_gallery.image_page),
        Route(f"/g/{guild}/rate", pages_rate.rate_page),
        Route(f"/g/{guild}/rate/next", pages_rate.rate_next),
        Route(f"/g/{guild}/rate", pages_rate.rate, methods=["POST"]),
        Route(f"/g/{guild}/compare", pages_rate.compare_page),
        Route(f"/g/{guild}/compare/next", pages_rate.compare_next),
        Route(f"/g/{guild}/compare", pages_rate.choose, methods=["POST"]),
        Route(f"/g/{guild}/mod", pages_mod.moderation_page),
        Route(f"/g/{guild}/mod/{{action:str}}", pages_mod.moderation_action, methods=["POST"]),
        Route("/img/{image_id:int}.png", pages_gallery.image_png),
        Route("/thumb/{image_id:int}.webp", pages_gallery.thumbnail),
        Route("/me", pages_me.me_page),
        Route("/me/data.json", pages_me.me_data),
        Route("/me/{action:str}", pages_me.me_action, methods=["POST"]),
        Route("/maintainers", pages_maint.maintainers_page),
        Route("/maintainers/plot/{name:str}.svg", pages_maint.plot),
        Route("/maintainers/predictors/{predictor_id:int}/{name:str}", pages_maint.predictor_file),
        Route("/favicon.ico", lambda request: RedirectResponse("/static/favicon.svg")),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await discord.close()

    origin = discord.authorize_url.rsplit("/oauth2", 1)[0]
    metrics = metrics or WebMetrics()
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestMetrics, metrics=metrics),
            Middleware(Guard, authorize_origin=origin),
            Middleware(
                SessionMiddleware,
                secret_key=key,
                session_cookie="dreamrate_session",
                max_age=int(settings.web.session_hours * 3600),
                same_site="lax",
                https_only=context.base_url.startswith("https://"),
            ),
            Middleware(SessionGate, engine=engine),
        ],
        exception_handlers={HTTPException: _http_error, NotLoggedIn: _not_logged_in},
        lifespan=lifespan,
    )
    app.state.ctx = context
    app.state.metrics = metrics
    app.state.metrics_server = serve_metrics(metrics, engine)
    return app
