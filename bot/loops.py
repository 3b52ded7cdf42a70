"""The bot's background loops: a step every few seconds until the client closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import discord

__all__ = ["every"]

logger = logging.getLogger(__name__)


async def every(
    client: discord.Client, seconds: float, step: Callable[[], Awaitable[Any]], what: str
) -> None:
    """|coro| Once the client is ready, run ``step`` every ``seconds`` until it closes; a
    failing step is logged and tried again at the next tick."""
    await client.wait_until_ready()
    while not client.is_closed():
        try:
            await step()
        except Exception:
            logger.exception("%s failed; retrying", what)
        await asyncio.sleep(seconds)
