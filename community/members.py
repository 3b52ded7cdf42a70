"""Who a member is to the community: the moderator test, from what Discord says of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ADMINISTRATOR", "MANAGE_GUILD", "Member", "is_moderator"]

#: Discord's permission bits that make a member a moderator here.
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5


@dataclass(frozen=True, slots=True)
class Member:
    """A member as the adapters know them: their Discord id and the name they go by."""

    discord_id: int
    name: str = ""


def is_moderator(
    *,
    permissions: int,
    owner: bool = False,
    roles: Iterable[str] = (),
    moderator_role: str | None = None,
) -> bool:
    """Whether a member moderates a guild: its owner, Manage Server or Administrator in
    their ``permissions`` bits, or the moderator role named in the settings among their
    ``roles``. Pure: the bot passes an interaction's member, the web what OAuth2 and the
    bot's token tell it."""
    if owner or permissions & (ADMINISTRATOR | MANAGE_GUILD):
        return True
    return bool(moderator_role) and moderator_role in set(roles)
