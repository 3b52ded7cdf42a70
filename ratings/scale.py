"""The rating scale: which emoji mean which rating (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dreamrate.core.settings import RatingSettings

__all__ = ["DEFAULT_CHOICE_EMOJIS", "WINNERS", "RatingScale"]

#: Left image, right image, "can't choose".
DEFAULT_CHOICE_EMOJIS = ("⬅️", "➡️", "🟰")
#: What each choice emoji says, in the same order.
WINNERS = ("a", "b", "tie")


@dataclass(frozen=True, slots=True)
class RatingScale:
    """Emoji, lowest first, with the value each stands for; the name is stored with every rating."""

    name: str
    emojis: tuple[str, ...]
    values: tuple[float, ...]
    flag_emoji: str = "🚩"
    #: On a comparison post: left image, right image, "can't choose".
    choice_emojis: tuple[str, str, str] = DEFAULT_CHOICE_EMOJIS

    def __post_init__(self) -> None:
        if len(self.emojis) != len(self.values) or not self.emojis:
            raise ValueError("a rating scale needs as many values as emoji, and at least one")
        if len(set(self.emojis)) != len(self.emojis) or self.flag_emoji in self.emojis:
            raise ValueError("rating emoji must be distinct and differ from the flag emoji")
        choices = {_bare(e) for e in self.choice_emojis}
        if len(choices) != 3 or choices & {_bare(e) for e in (*self.emojis, self.flag_emoji)}:
            raise ValueError("the three choice emoji must be distinct and not rating emoji")

    @classmethod
    def from_settings(cls, settings: RatingSettings) -> RatingScale:
        left, right, tie = settings.choice_emojis
        return cls(
            settings.scale,
            tuple(settings.emojis),
            tuple(settings.values),
            settings.flag_emoji,
            (left, right, tie),
        )

    def value_of(self, emoji: str) -> float | None:
        """The rating ``emoji`` stands for; None for any other emoji (the flag included)."""
        try:
            return self.values[self.emojis.index(_normalise(emoji))]
        except ValueError:
            return None

    def choice_emoji(self, emoji: str) -> str | None:
        """The configured form of a choice emoji (Discord may send it without U+FE0F)."""
        winner = self.winner_of(emoji)
        return None if winner is None else self.choice_emojis[WINNERS.index(winner)]

    def winner_of(self, emoji: str) -> str | None:
        """``a``, ``b`` or ``tie`` for a choice emoji; None for any other."""
        try:
            return WINNERS[[_bare(e) for e in self.choice_emojis].index(_bare(emoji))]
        except ValueError:
            return None

    @property
    def reaction_emojis(self) -> tuple[str, ...]:
        """What the bot seeds under every image it posts: the rating emoji, then the flag."""
        return (*self.emojis, self.flag_emoji)

    @property
    def choice_reactions(self) -> tuple[str, ...]:
        """What the bot seeds under every comparison post."""
        return self.choice_emojis


def _normalise(emoji: str) -> str:
    # Discord sends keycaps with or without the variation selector (U+FE0F), e.g. "1\u20e3".
    if len(emoji) == 2 and emoji[1] == "\u20e3":
        return emoji[0] + "\ufe0f\u20e3"
    return emoji


def _bare(emoji: str) -> str:
    # Arrows come with or without the emoji presentation selector (U+FE0F) too.
    return emoji.replace("\ufe0f", "")
