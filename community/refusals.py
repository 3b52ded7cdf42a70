"""The refusals of the use cases: one sentence for the member, and what kind of no it is."""

from __future__ import annotations

from dreamrate.core.errors import DreamrateError

__all__ = ["BadValue", "CommunityError", "NotAllowed", "NotFound"]


class CommunityError(DreamrateError):
    """The community's rules refuse this."""


class NotAllowed(CommunityError):
    """You may not do that here."""


class NotFound(CommunityError):
    """There is no such thing here."""


class BadValue(CommunityError, ValueError):
    """That value is not allowed."""
