"""Who is asking: the signed session of a logged-in member, CSRF tokens, the click throttle.

The session is a signed cookie (Starlette's ``SessionMiddleware``: HttpOnly, SameSite=Lax,
Secure behind https). A forged cookie fails the signature and reads as no session; a login
older than ``DREAMRATE_WEB_SESSION_HOURS`` is dropped even while the cookie is refreshed,
and one that ended (logout, erase, ban: :mod:`.sessions`) counts nowhere.
Every state-changing request carries the session's CSRF token (a form field or the
``X-CSRF-Token`` header), compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from dreamrate.core.atomic import create_private_file
from dreamrate.core.errors import StorageError

__all__ = [
    "ClickThrottle",
    "LoggedIn",
    "csrf_ok",
    "load_secret_key",
    "logged_in",
    "start_session",
]


#: Seconds moderator rights read at login stay good: a demoted moderator loses the web's
#: moderation pages within this time (members keep their login for the session's length).
MODERATOR_FRESH_S = 3600.0


@dataclass(frozen=True, slots=True)
class LoggedIn:
    discord_id: int
    name: str
    #: Guild id -> (name, may moderate), for the guilds shared with the bot at login.
    guilds: Mapping[int, tuple[str, bool]]
    csrf: str
    sid: str = ""
    login_at: float = 0.0

    def member_of(self, guild_id: int) -> bool:
        return guild_id in self.guilds

    def was_moderator(self, guild_id: int) -> bool:
        return self.guilds.get(guild_id, ("", False))[1]

    def moderates(self, guild_id: int) -> bool:
        fresh = time.time() - self.login_at < MODERATOR_FRESH_S
        return fresh and self.was_moderator(guild_id)


def start_session(
    request: Request, discord_id: int, name: str, guilds: Mapping[int, tuple[str, bool]]
) -> tuple[str, float]:
    """Replace the session with a fresh login (a new CSRF token too); returns its id and
    time, for :func:`dreamrate.web.sessions.record_login`."""
    sid, at = secrets.token_urlsafe(16), time.time()
    request.session.clear()
    request.session.update(
        {
            "uid": str(discord_id),
            "name": name,
            "guilds": {str(g): [n, m] for g, (n, m) in guilds.items()},
            "csrf": secrets.token_urlsafe(32),
            "sid": sid,
            "at": at,
        }
    )
    return sid, at


def logged_in(request: Request, max_age_s: float) -> LoggedIn | None:
    """The member of a valid, unexpired session, else None (and the session is cleared).
    Whether the login still counts (no logout, erase or ban since) was settled before the
    request reached the page (:class:`dreamrate.web.sessions.SessionGate`)."""
    session = request.session
    try:
        if not session or time.time() - float(session["at"]) > max_age_s:
            session.clear()
            return None
        guilds = {int(g): (str(v[0]), bool(v[1])) for g, v in session["guilds"].items()}
        return LoggedIn(
            int(session["uid"]),
            str(session["name"]),
            guilds,
            str(session["csrf"]),
            str(session.get("sid", "")),
            float(session["at"]),
        )
    except (KeyError, TypeError, ValueError, IndexError):
        session.clear()
        return None


def csrf_ok(member: LoggedIn, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(member.csrf.encode(), str(token).encode())


def load_secret_key(configured: str | None, data_dir: Path) -> str:
    """The configured cookie key, or one made once and kept in the data folder, readable by
    its owner only from its first byte (0600). Processes starting together make it once:
    the first one's key is the one every process reads."""
    if configured:
        return configured
    path = data_dir / "web-secret-key"
    if not path.is_file():
        create_private_file(
            path, secrets.token_urlsafe(48).encode(), StorageError, "DREAMRATE_DATA_DIR"
        )
    return path.read_text().strip()


class ClickThrottle:
    """At most ``burst`` clicks at once and ``rate`` a second after that, per member: a
    script hammering the rating endpoint is slowed down without blocking anyone else."""

    def __init__(self, rate: float = 4.0, burst: float = 12.0) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, tuple[float, float]] = {}

    def allow(self, member: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(member, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[member] = (tokens, now)
            return False
        self._buckets[member] = (tokens - 1, now)
        if len(self._buckets) > 50_000:  # forget the idle ones
            self._buckets = {m: v for m, v in self._buckets.items() if now - v[1] < 60}
        return True
