"""``dreamrate bot``: run the Discord bot (with one in-process generation worker by default)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from dreamrate.app import open_database
from dreamrate.cli.context import state
from dreamrate.errors import ConfigError, DreamrateError

__all__ = ["bot_cmd"]


def bot_cmd(
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker", help="Do not render here; `dreamrate worker` processes serve the queue."
        ),
    ] = False,
) -> None:
    """Run the Discord bot until SIGTERM/SIGINT."""
    import discord

    from dreamrate.bot.client import DreamrateBot
    from dreamrate.bot.connection import point_discord_at
    from dreamrate.services import build_repository, build_worker

    settings = state.settings
    token = settings.discord.resolved_token()
    if token is None:
        raise ConfigError("set DISCORD_TOKEN (or DREAMRATE_DISCORD_TOKEN_FILE) to the bot's token")
    point_discord_at(settings.discord.api_base, settings.discord.gateway_url)

    async def run() -> None:
        engine = await open_database(settings)
        repo = build_repository(settings, engine)
        worker = None if no_worker else build_worker(settings, repo)
        bot = DreamrateBot(settings=settings, engine=engine, repo=repo, worker=worker)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        try:
            await bot.start(token.get_secret_value())
        except discord.LoginFailure:
            raise DreamrateError("Discord refused the bot token; check DISCORD_TOKEN") from None
        except discord.PrivilegedIntentsRequired:
            raise DreamrateError(
                "Discord refused the intents; dreamrate needs none privileged"
            ) from None
        finally:
            if not bot.is_closed():
                await bot.close()
            await engine.dispose()

    asyncio.run(run())
