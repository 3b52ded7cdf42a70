"""Who may moderate, and what the bot may do where it was asked."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from dreamrate.community.members import Member, is_moderator
from dreamrate.core.errors import DreamrateError

if TYPE_CHECKING:
    from dreamrate.community.requests import Requests

__all__ = [
    "POSTING",
    "check_where_asked",
    "member_of",
    "missing_for_posting",
    "moderates",
    "refusal_for_posting",
]


def member_of(interaction: discord.Interaction) -> Member:
    """The member behind an interaction, as the use cases know them."""
    return Member(interaction.user.id, interaction.user.name)


def moderates(interaction: discord.Interaction, role_name: str | None) -> bool:
    """Whether the member moderates where they asked (:func:`is_moderator` on what the
    interaction says of them: their permissions there and their roles)."""
    roles = [role.name for role in getattr(interaction.user, "roles", [])]
    return is_moderator(
        permissions=interaction.permissions.value, roles=roles, moderator_role=role_name
    )


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


async def check_where_asked(
    requests: Requests, interaction: discord.Interaction, what: str
) -> None:
    """|coro| Refuse at once what may not happen where the member asked: the requests use
    case's checks (a guild, no ban, the allow-list), then whether the bot may post images
    there. Reads only, so it runs before the acknowledgement.

    Raises
    ------
    DreamrateError
        one sentence for the member.
    """
    await requests.check(interaction.guild_id, interaction.channel_id, member_of(interaction), what)
    refusal = refusal_for_posting(interaction.app_permissions)
    if refusal is not None:
        raise DreamrateError(refusal)
