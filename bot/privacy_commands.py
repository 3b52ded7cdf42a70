"""``/privacy``: a member's own data (opt out, opt in, erase, export), in any channel or DM.

The rules and what follows them (an erase keeps everything out of every dataset; an opt-in
or an erase asks for a new baseline of the member's reactions, which the reaction recorder
takes) are :mod:`dreamrate.community.privacy`'s, the same the web home's page calls.

No ``from __future__ import annotations``: discord.py reads the option types at runtime.
"""

import io
import json
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from dreamrate.community import privacy
from dreamrate.db.retry import retry_on_disconnect

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["PrivacyCog"]


class PrivacyCog(
    commands.GroupCog, group_name="privacy", group_description="Your data: opt out, erase, export."
):
    """The ``/privacy`` group.

    Parameters
    ----------
    engine
        The database.
    """

    def __init__(self, engine: "AsyncEngine") -> None:
        self.engine = engine
        super().__init__()

    @app_commands.command(name="optout", description="Stop recording my ratings.")
    async def optout(self, interaction: discord.Interaction) -> None:
        await retry_on_disconnect(
            lambda: privacy.set_opted_out(
                self.engine, interaction.user.id, True, name=interaction.user.name
            )
        )
        await interaction.response.send_message(
            "Your reactions will no longer be recorded.", ephemeral=True
        )

    @app_commands.command(name="optin", description="Record my ratings again.")
    async def optin(self, interaction: discord.Interaction) -> None:
        await retry_on_disconnect(
            lambda: privacy.set_opted_out(
                self.engine, interaction.user.id, False, name=interaction.user.name
            )
        )
        await interaction.response.send_message(
            "Your reactions are recorded again, from now on.", ephemeral=True
        )

    @app_commands.command(
        name="erase", description="Erase all my ratings; they are kept out of every dataset."
    )
    async def erase(self, interaction: discord.Interaction) -> None:
        erased = await retry_on_disconnect(lambda: privacy.erase(self.engine, interaction.user.id))
        await interaction.response.send_message(str(erased), ephemeral=True)

    @app_commands.command(name="export", description="Send me my data as a JSON file.")
    async def export(self, interaction: discord.Interaction) -> None:
        data = json.dumps(
            await retry_on_disconnect(
                lambda: privacy.export_mine(self.engine, interaction.user.id)
            ),
            indent=2,
            ensure_ascii=False,
        )
        file = discord.File(io.BytesIO(data.encode()), filename="dreamrate-my-data.json")
        await interaction.response.send_message("Your data:", file=file, ephemeral=True)
