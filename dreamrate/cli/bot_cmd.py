"""``dreamrate bot``: run the Discord bot (with a generation worker in a child process by default)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from dreamrate.cli.cli_state import BotMetricsPort, state
from dreamrate.core.errors import ConfigError

__all__ = ["bot_cmd"]


def bot_cmd(
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker", help="Do not render here; `dreamrate worker` processes serve the queue."
        ),
    ] = False,
    metrics_port: BotMetricsPort = None,
) -> None:
    """Run the Discord bot until SIGTERM/SIGINT."""
    from dreamrate.bot.connection import point_discord_at
    from dreamrate.bot.serving import run_bot
    from dreamrate.core.metrics import ensure_port_free
    from dreamrate.database_setup import open_database
    from dreamrate.generation.store import open_image_store
    from dreamrate.services import WorkerProcess, build_repository

    settings = state.settings
    token = settings.discord.resolved_token()
    if token is None:
        raise ConfigError("set DISCORD_TOKEN (or DREAMRATE_DISCORD_TOKEN_FILE) to the bot's token")
    point_discord_at(settings.discord.api_base, settings.discord.gateway_url)
    # The bot posts from the store; its own worker (unless --no-worker) writes there too.
    open_image_store(settings).check(write=not no_worker)
    if not no_worker and settings.metrics.worker_port:
        # The worker child binds it later, where a taken port could only be logged.
        ensure_port_free(settings.metrics.host, settings.metrics.worker_port, "worker")

    async def run() -> None:
        engine = await open_database(settings)
        try:
            repo = build_repository(settings, engine)
            worker = None if no_worker else WorkerProcess(settings)
            await run_bot(
                settings, engine, repo, worker, token.get_secret_value(), metrics_port=metrics_port
            )
        finally:
            await engine.dispose()

    asyncio.run(run())
