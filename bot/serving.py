"""Running the bot until it is told to stop, with Discord's refusals as one-line errors."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import discord

from dreamrate.bot.client import DreamrateBot
from dreamrate.core.errors import DreamrateError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.bot.client import BackgroundWorker
    from dreamrate.core.settings import Settings
    from dreamrate.generation.queue import JobRepository

__all__ = ["run_bot"]


async def run_bot(
    settings: Settings,
    engine: AsyncEngine,
    repo: JobRepository,
    worker: BackgroundWorker | None,
    token: str,
) -> None:
    """|coro| Connect and serve until SIGTERM/SIGINT.

    Raises
    ------
    DreamrateError
        when Discord refuses the token or the intents.
    """
    bot = DreamrateBot(settings=settings, engine=engine, repo=repo, worker=worker)
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
