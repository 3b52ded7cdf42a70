"""``dreamrate web``: serve the web home (gallery, rating, moderation) on the configured
database."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated

import typer

from dreamrate.cli.cli_state import WebMetricsPort, state
from dreamrate.core.errors import ConfigError

if TYPE_CHECKING:
    from dreamrate.core.settings import Settings

__all__ = ["serve_web", "web_cmd"]

logger = logging.getLogger(__name__)


def web_cmd(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on (DREAMRATE_WEB_HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port to listen on (DREAMRATE_WEB_PORT)."),
    ] = None,
    metrics_port: WebMetricsPort = None,
) -> None:
    """Serve the web home until SIGTERM/SIGINT: members log in with Discord."""
    settings = state.settings
    web = settings.web.model_copy(
        update={"host": host or settings.web.host, "port": port or settings.web.port}
    )
    update: dict[str, object] = {"web": web}
    if metrics_port is not None:
        update["metrics"] = settings.metrics.model_copy(update={"web_port": metrics_port})
    settings = settings.model_copy(update=update)
    if web.client_secret is None:
        raise ConfigError("set DREAMRATE_WEB_CLIENT_SECRET to the Discord application's secret")
    if settings.discord.resolved_token() is None:
        raise ConfigError(
            "set DISCORD_TOKEN: the web home asks Discord which servers the bot is in"
        )
    asyncio.run(serve_web(settings))


async def serve_web(settings: Settings) -> None:
    """Serve the web home with uvicorn until it is told to stop (SIGINT/SIGTERM), and its
    metrics on DREAMRATE_METRICS_WEB_PORT when set."""
    import uvicorn

    from dreamrate.database_setup import open_database
    from dreamrate.generation.store import open_image_store
    from dreamrate.web.app import create_app

    store = open_image_store(settings)
    await asyncio.to_thread(store.check)  # one line and exit 2 when the images cannot be read
    engine = await open_database(settings)
    app = create_app(settings, engine, store=store)
    server = app.state.metrics_server
    try:
        if settings.metrics.web_port is not None:
            await server.start(settings.metrics.host, settings.metrics.web_port)
        config = uvicorn.Config(
            app,
            host=settings.web.host,
            port=settings.web.port,
            log_level="warning",
            access_log=False,
            # Behind a TLS reverse proxy: trust its X-Forwarded-Proto / -For from localhost.
            proxy_headers=True,
        )
        logger.info("web home on http://%s:%s", settings.web.host, settings.web.port)
        await uvicorn.Server(config).serve()
    finally:
        await server.stop()
        await engine.dispose()
