"""What the bot reports to Prometheus: its gateway, the rating log, deliveries, and what
Discord's REST API answered (Discord restricts an IP that makes 10,000 invalid requests —
401, 403, 429 — in 10 minutes)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from dreamrate.core.metrics import SlidingCount

__all__ = ["INVALID_REQUEST_LIMIT", "BotMetrics"]

#: Discord's threshold: this many invalid requests in 10 minutes and the IP is restricted.
INVALID_REQUEST_LIMIT = 10_000
#: The window Discord counts them in.
INVALID_WINDOW_S = 600.0


def _invalid(status: int, headers: Any) -> bool:
    """Whether Discord counts an answer as invalid: 401 and 403 always, 429 unless its scope
    is ``shared`` (a shared resource's limit, not the bot's)."""
    if status in (401, 403):
        return True
    return status == 429 and headers.get("X-RateLimit-Scope") != "shared"


class BotMetrics:
    """The bot's metrics, in a registry of its own (``dreamrate_bot_*``).

    Parameters
    ----------
    clock
        Seconds, for the 10-minute window (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connected = False
        self.latency = Gauge(
            "dreamrate_bot_gateway_latency_seconds",
            "Time between the gateway's last heartbeat and its acknowledgement (NaN when "
            "not connected).",
            registry=r,
        )
        self.up = Gauge(
            "dreamrate_bot_gateway_connected", "1 while a gateway session is live.", registry=r
        )
        self.up.set_function(lambda: 1.0 if self.connected else 0.0)
        self.events = Counter(
            "dreamrate_bot_gateway_events",
            "Gateway dispatch events received, by type (rate(): events per second).",
            ["type"],
            registry=r,
        )
        self.reactions_waiting = Gauge(
            "dreamrate_bot_reactions_waiting",
            "Reaction events received and not yet recorded in the rating log.",
            registry=r,
        )
        self.rating_log_lag = Gauge(
            "dreamrate_bot_rating_log_lag_seconds",
            "Age of the oldest reaction event not yet recorded (0 when all are).",
            registry=r,
        )
        self.deliveries_waiting = Gauge(
            "dreamrate_bot_deliveries_waiting",
            "Jobs whose images or progress wait to be posted.",
            registry=r,
        )
        self.responses = Counter(
            "dreamrate_bot_discord_responses",
            "Answers of Discord's REST API to the bot, by status class (2xx, 4xx...) and for "
            "401, 403, 404 and 429 by status.",
            ["status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "dreamrate_bot_discord_rate_limited",
            "429 answers (rate limited), whatever their scope.",
            registry=r,
        )
        window = SlidingCount(INVALID_WINDOW_S, clock or time.monotonic)
        self._invalid_window = window
        self.invalid = Gauge(
            "dreamrate_bot_discord_invalid_requests_10m",
            f"Invalid requests (401, 403, non-shared 429) in the last 10 minutes; Discord "
            f"restricts the IP at {INVALID_REQUEST_LIMIT}.",
            registry=r,
        )
        self.invalid.set_function(lambda: float(window()))
        limit = Gauge(
            "dreamrate_bot_discord_invalid_requests_limit",
            "Discord's limit on invalid requests per 10 minutes.",
            registry=r,
        )
        limit.set(INVALID_REQUEST_LIMIT)

    def set_latency(self, seconds: float) -> None:
        self.latency.set(seconds if self.connected and math.isfinite(seconds) else math.nan)

    def response(self, status: int, headers: Any) -> None:
        """One answer from Discord's REST API."""
        label = str(status) if status in (401, 403, 404, 429) else f"{status // 100}xx"
        self.responses.labels(label).inc()
        if status == 429:
            self.rate_limited.inc()
        if _invalid(status, headers):
            self._invalid_window.add()

    def trace_config(self) -> aiohttp.TraceConfig:
        """An aiohttp trace that counts every REST answer (discord.py's ``http_trace``)."""
        trace = aiohttp.TraceConfig()

        async def on_end(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams,
        ) -> None:
            self.response(params.response.status, params.response.headers)

        trace.on_request_end.append(on_end)
        return trace
