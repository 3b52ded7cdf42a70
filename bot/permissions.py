"""Who may moderate: pure checks on an interaction (no I/O)."""

from __future__ import annotations

import discord

__all__ = ["is_moderator"]


def is_moderator(interaction: discord.Interaction, role_name: str | None) -> bool:
    """Manage Server permission, or the moderator role named in settings."""
    if interaction.permissions.manage_guild:
        return True
    roles = getattr(interaction.user, "roles", [])
    return bool(role_name) and any(role.name == role_name for role in roles)
