"""Discord's rate limits, as the fake server enforces them: buckets keyed by route and major
parameter, fixed windows, the ``X-RateLimit-*`` headers on every answer, 429s past them.

The figures are Discord's published ones for the routes the bot uses: adding a reaction
1 per 0.25 s per channel, creating a message 5 per 5 s per channel, executing or editing
through an interaction webhook 5 per 2 s per token, deleting a message 5 per 1 s per
channel, anything else 50 per second per route, and 50 requests per second in all.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["BUCKETS", "GLOBAL_PER_SECOND", "Bucket", "Decision", "RateLimiter", "bucket_for"]

#: Bucket kind -> (requests per window, window seconds).
BUCKETS: dict[str, tuple[int, float]] = {
    "reaction": (1, 0.25),
    "message": (5, 5.0),
    "webhook": (5, 2.0),
    "delete": (5, 1.0),
    "route": (50, 1.0),
}
GLOBAL_PER_SECOND = 50


def bucket_for(method: str, pattern: str, args: tuple[str, ...]) -> tuple[str, str, str]:
    """``(kind, bucket name, major parameter)`` of a request to route ``pattern`` with
    captured ``args``; routes of one name share one ``X-RateLimit-Bucket`` hash. Templates
    may name their parameters (``{channel_id}``) or not (``*``)."""
    pattern = re.sub(r"\{[^/]+\}", "*", pattern)
    if pattern.startswith("/channels/*/messages/*/reactions/") and method == "PUT":
        return "reaction", "reaction", args[0]
    if pattern == "/channels/*/messages" and method == "POST":
        return "message", "message", args[0]
    if pattern.startswith("/channels/*/messages/*") and method == "DELETE":
        return "delete", "delete", args[0]
    if pattern.startswith("/webhooks/"):
        return "webhook", "webhook", f"{args[0]}/{args[1]}"
    major = args[0] if pattern.startswith(("/channels/", "/guilds/")) and args else ""
    return "route", f"{method} {pattern}", major


@dataclass
class Bucket:
    """One fixed window: ``limit`` requests, then wait until the window ends."""

    limit: int
    period: float
    started: float = 0.0
    used: int = 0

    def take(self, now: float) -> float:
        """Use one request; 0 if allowed, else the seconds until the window resets."""
        if now >= self.started + self.period:
            self.started, self.used = now, 0
        if self.used >= self.limit:
            return self.started + self.period - now
        self.used += 1
        return 0.0

    def headers(self, now: float, name: str) -> dict[str, str]:
        reset_after = max(self.started + self.period - now, 0.0)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.limit - self.used, 0)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(name.encode()).hexdigest()[:16],
        }


@dataclass(frozen=True)
class Decision:
    """What to answer: ``retry_after`` 0 to serve the request, the headers either way."""

    retry_after: float
    is_global: bool
    headers: dict[str, str]


@dataclass
class RateLimiter:
    """Every bucket of one server; ``clock`` is injectable for tests."""

    enabled: bool = True
    clock: Callable[[], float] = time.monotonic
    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)
    world: Bucket = field(default_factory=lambda: Bucket(GLOBAL_PER_SECOND, 1.0))

    def check(self, kind: str, name: str, major: str) -> Decision:
        """Count one request in bucket ``(name, major)`` of ``kind`` (and the global one)."""
        if not self.enabled:
            return Decision(0.0, False, {})
        limit, period = BUCKETS[kind]
        bucket = self.buckets.setdefault((name, major), Bucket(limit, period))
        now = self.clock()
        wait = self.world.take(now)
        if wait:
            return Decision(wait, True, bucket.headers(now, name))
        wait = bucket.take(now)
        return Decision(wait, False, bucket.headers(now, name))
