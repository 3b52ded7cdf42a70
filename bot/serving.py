"""Running the bot until it is told to stop, with Discord's refusals as one-line errors."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import discord

from dreamrate.bot.client import DreamrateBot
from dreamrate.core.errors import DreamrateError
from dreamrate.core.metrics import MetricsServer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.bot.client import BackgroundWorker
    from dreamrate.core.settings import Settings
    from dreamrate.generation.queue import JobRepository

__all__ = ["run_bot", "serve_metrics"]


async def run_bot(
    settings: Settings,
    engine: AsyncEngine,
    repo: JobRepository,
    worker: BackgroundWorker | None,
    token: str,
    *,
    metrics_port: int | None = None,
) -> None:
    """|coro| Connect and serve until SIGTERM/SIGINT; with a metrics port (``metrics_port``,
    else DREAMRATE_METRICS_BOT_PORT), /metrics and /healthz are served there.

    Raises
    ------
    DreamrateError
        when Discord refuses the token or the intents, or the metrics port is taken.
    """
    bot = DreamrateBot(settings=settings, engine=engine, repo=repo, worker=worker)
    port = metrics_port if metrics_port is not None else settings.metrics.bot_port
    server = serve_metrics(bot)
    if port is not None:
        await server.start(settings.metrics.host, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
    try:
        await bot.start(token)
    except discord.LoginFailure as exc:
        raise DreamrateError("Discord refused the bot token; check DISCORD_TOKEN") from exc
    except discord.PrivilegedIntentsRequired as exc:
        raise DreamrateError(
            "Discord refused the intents; dreamrate needs none privileged"
        ) from exc
    finally:
        if not bot.is_closed():
            await bot.close()
        await server.stop()


def serve_metrics(bot: DreamrateBot) -> MetricsServer:
    """The bot's metrics and health server (not yet listening)."""
    return MetricsServer(
        "bot",
        bot.metrics.registry,
        checks=bot.health_checks(),
        refreshers=[bot.refresh_metrics],
    )
