"""Which emoji the local Discord accepts in a reaction, and how it names them.

Discord takes a Unicode emoji, or a custom emoji of a guild the bot is in as ``name:id``
(``:name:id`` and ``a:name:id`` too). Anything else is 400 Unknown Emoji (10014). Discord's
own Unicode list is not published as data; this accepts what Unicode calls pictographic
symbols, with the joiners, variation selectors, skin tones, tag sequences and keycaps that
build emoji from them, and refuses letters, digits and punctuation (``notanemoji``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_REACTIONS", "ReactionEmoji", "is_unicode_emoji", "parse_emoji"]

#: Distinct emoji one message may carry (Discord: 30010 past it).
MAX_REACTIONS = 20
_KEYCAP = re.compile("^[0-9#*]\ufe0f?\u20e3$")
#: Joiners and modifiers that build an emoji but are not one.
_GLUE = {"\u200d", "\ufe0e", "\ufe0f"}
#: Emoji outside the pictographic symbol categories.
_EXTRA = {"\u203c", "\u2049", "\u2139", "\u3030", "\u303d"}
_CUSTOM = re.compile(r"^(?:(a)?:)?([A-Za-z0-9_]{2,32}):(\d{1,20})$")


def is_unicode_emoji(text: str) -> bool:
    """Whether ``text`` is one Unicode emoji (as far as Unicode's categories tell)."""
    if not text or len(text) > 16:
        return False
    if _KEYCAP.match(text):
        return True
    pictographs = 0
    for char in text:
        point = ord(char)
        if char in _GLUE or 0x1F3FB <= point <= 0x1F3FF or 0xE0020 <= point <= 0xE007F:
            continue
        category = unicodedata.category(char)
        if (
            char in _EXTRA
            or (
                point >= 0x2000
                and (category == "So" or (category == "Sm" and 0x2190 <= point <= 0x21FF))
            )
            or char in "\u00a9\u00ae"
        ):
            pictographs += 1
            continue
        return False
    return pictographs > 0


@dataclass(frozen=True)
class ReactionEmoji:
    """A reaction's emoji: Unicode (``id`` None) or a guild's custom emoji."""

    name: str
    id: int | None = None
    animated: bool = False

    @property
    def key(self) -> str:
        """How reactions on a message are keyed (and how Discord's routes name it)."""
        return self.name if self.id is None else f"{self.name}:{self.id}"

    def payload(self) -> dict[str, Any]:
        if self.id is None:
            return {"id": None, "name": self.name}
        return {"id": str(self.id), "name": self.name, "animated": self.animated}


def parse_emoji(text: str, custom: dict[int, ReactionEmoji]) -> ReactionEmoji | None:
    """The emoji ``text`` names (a route's ``{emoji_name}``, unquoted, or ``<:name:id>``),
    given the custom emoji the bot can use by id; None where Discord answers Unknown Emoji."""
    text = text.strip("<>")
    match = _CUSTOM.match(text)
    if match is not None:
        return custom.get(int(match.group(3)))  # Discord goes by the id
    return ReactionEmoji(text) if is_unicode_emoji(text) else None
