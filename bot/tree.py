"""The command tree with dreamrate's one error handler, and the private answers it sends."""

from __future__ import annotations

import contextlib
import logging

import discord
from discord import app_commands

from dreamrate.core.errors import DreamrateError

__all__ = ["DreamrateTree", "answer_privately", "answered", "thinking"]

logger = logging.getLogger(__name__)

#: The key in ``Interaction.extras`` of a public "thinking…" no answer has replaced yet.
_THINKING = "dreamrate.thinking"


async def thinking(interaction: discord.Interaction) -> None:
    """|coro| Acknowledge publicly ("thinking…"); the answer edits it in place."""
    await interaction.response.defer(thinking=True)
    interaction.extras[_THINKING] = True


def answered(interaction: discord.Interaction) -> None:
    """The public "thinking…" became the answer: a later refusal must not remove it."""
    interaction.extras.pop(_THINKING, None)


async def answer_privately(interaction: discord.Interaction, text: str) -> None:
    """|coro| ``text`` for the member alone. A public "thinking…" (a request refused after
    it was acknowledged: a full queue) goes first, so the refusal is not shown to all."""
    if interaction.extras.pop(_THINKING, False):
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


class DreamrateTree(app_commands.CommandTree):
    """Turns a :class:`DreamrateError` (and discord.py's own refusals: a bad option, a
    failed check) into one private sentence; anything else is logged with its traceback
    and the member is told it went wrong on our side."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        cause = getattr(error, "original", error)
        message = cause.message if isinstance(cause, DreamrateError) else None
        if message is None and isinstance(
            error, app_commands.TransformerError | app_commands.CheckFailure
        ):
            message = str(error)
        if message is None:
            logger.error(
                "command %s failed",
                interaction.command and interaction.command.name,
                exc_info=cause,
            )
            message = "Something went wrong on our side; the moderators can see the log."
        await answer_privately(interaction, message)
