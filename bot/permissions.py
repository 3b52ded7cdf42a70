"""Who may moderate, and what the bot may do where it was asked: pure checks (no I/O)."""

from __future__ import annotations

import discord

__all__ = ["POSTING", "is_moderator", "missing_for_posting", "refusal_for_posting"]


def is_moderator(interaction: discord.Interaction, role_name: str | None) -> bool:
    """Manage Server permission, or the moderator role named in settings."""
    if interaction.permissions.manage_guild:
        return True
    roles = getattr(interaction.user, "roles", [])
    return bool(role_name) and any(role.name == role_name for role in roles)


#: What the bot needs where it posts images: (discord.py flag, the name members see).
POSTING: tuple[tuple[str, str], ...] = (
    ("view_channel", "View Channel"),
    ("send_messages", "Send Messages"),
    ("embed_links", "Embed Links"),
    ("attach_files", "Attach Files"),
    ("add_reactions", "Add Reactions"),
    ("read_message_history", "Read Message History"),
)


def missing_for_posting(permissions: discord.Permissions) -> list[str]:
    """The permissions the bot lacks to post rateable images with ``permissions`` (the
    interaction's ``app_permissions``), by the names Discord shows; empty when it has all."""
    return [shown for flag, shown in POSTING if not getattr(permissions, flag)]


def refusal_for_posting(permissions: discord.Permissions) -> str | None:
    """A one-line refusal naming what the bot may not do here, or None."""
    missing = missing_for_posting(permissions)
    if not missing:
        return None
    return (
        f"I can't post images here: I'm missing the {', '.join(missing)} permission"
        f"{'s' if len(missing) > 1 else ''} in this channel. Ask a moderator, or use another channel."
    )
