"""What the web home reports to Prometheus: requests, their latency and errors, by route.

Routes are labelled by their template (``/g/{guild_id:int}/rate``), never by the path a
client sent: an attacker's made-up paths all count as ``other``, so they cannot grow the
number of series without bound.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dreamrate.core.metrics import MetricsServer
from dreamrate.db.engine import database_down

__all__ = ["RequestMetrics", "WebMetrics", "serve_metrics"]

#: Methods labelled as themselves; anything else a client sends counts as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds: a cached thumbnail to a predictor's report page.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WebMetrics:
    """The web home's metrics, in a registry of its own (``dreamrate_web_*``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dreamrate_web_requests",
            "Requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "dreamrate_web_request_seconds",
            "Seconds from a request's arrival to the end of its answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "dreamrate_web_errors",
            "Answers with a 5xx status (or none at all: the handler raised), by route.",
            ["route"],
            registry=r,
        )


class RequestMetrics:
    """ASGI middleware that counts every HTTP request into :class:`WebMetrics`."""

    def __init__(self, app: ASGIApp, *, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def _route(self, scope: Scope) -> str:
        router: Any = scope.get("app")
        for route in getattr(router, "routes", ()):
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", "other")) or "other"
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self._route(scope)
        status = 500  # a handler that raises sends nothing: the server answers 500

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            m = self.metrics
            method = scope["method"] if scope["method"] in METHODS else "other"
            m.requests.labels(method, route, str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - started)
            if status >= 500:
                m.errors.labels(route).inc()


def serve_metrics(metrics: WebMetrics, engine: AsyncEngine) -> MetricsServer:
    """The web home's metrics and health server (not yet listening)."""
    return MetricsServer(
        "web", metrics.registry, checks={"database": lambda: database_down(engine)}
    )
