"""The notices a page shows once after an action ("Settings saved."): one of a fixed set,
kept in the signed session between the action and the page it redirects to, so a link
cannot make the site say anything (``?done=...`` is not read)."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["NOTICES", "flash", "take_notice"]

NOTICES = {
    "opted_out": "You opted out: nothing you rate is recorded until you opt in again.",
    "opted_in": "You opted in: what you rate from now on counts.",
    "removed": "Image {image} removed ({deleted} Discord message(s) deleted).",
    "dismissed": "{reports} report(s) on image {image} dismissed.",
    "banned": "Member {member} banned here.",
    "unbanned": "Member {member} unbanned here.",
    "settings": "Settings saved.",
}


def flash(request: Request, key: str, **numbers: int) -> None:
    """Show notice ``key`` (filled with ``numbers``) on the member's next page."""
    if key not in NOTICES:
        raise KeyError(f"no notice {key!r}")
    request.session["notice"] = [key, {k: int(v) for k, v in numbers.items()}]


def take_notice(request: Request) -> str | None:
    """The notice waiting for this page, once; None when there is none."""
    if "notice" not in request.session:
        return None
    waiting = request.session.pop("notice")
    try:
        key, numbers = waiting
        return NOTICES[key].format(**{str(k): int(v) for k, v in numbers.items()})
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None
