"""Health and Prometheus metrics for a long-running process (the bot, a worker, the web home).

Each process owns a :class:`prometheus_client.CollectorRegistry` (several can share one
interpreter, as in the tests) and serves it with a small aiohttp server on its metrics port:

* ``GET /metrics``: the Prometheus text format (``generate_latest``);
* ``GET /healthz``: 200 ``{"ready": true, ...}`` while every check passes, 503 with the
  failing checks' reasons otherwise (the gateway is down, the database does not answer).

Checks and refreshers are coroutines run on the process's own event loop when a request
comes, each with a deadline, so a hung database shows as "not ready", never as a hung scrape.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from dreamrate.core.errors import ConfigError

__all__ = ["Check", "MetricsServer", "SlidingCount", "ensure_port_free"]

logger = logging.getLogger(__name__)

#: A readiness check: returns None when healthy, else a short reason.
Check = Callable[[], Awaitable[str | None]]

#: Seconds one check (or refresher) may take before it counts as failed.
CHECK_TIMEOUT_S = 2.0


def _port_error(name: str, host: str, port: int, exc: OSError) -> ConfigError:
    why = "is taken" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
    return ConfigError(f"{name} metrics: {host}:{port} {why}; choose another --metrics-port")


def ensure_port_free(host: str, port: int, name: str) -> None:
    """Raise :class:`ConfigError` now when ``host:port`` cannot be bound (for a process that
    binds it later, in a child)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _port_error(name, host, port, exc) from None


class SlidingCount:
    """How many events happened in the last ``window`` seconds (Discord counts invalid
    requests per 10 minutes). Pure: the caller may pass the clock."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque()

    def add(self) -> None:
        self._times.append(self._clock())

    def __call__(self) -> int:
        horizon = self._clock() - self.window
        while self._times and self._times[0] < horizon:
            self._times.popleft()
        return len(self._times)


class MetricsServer:
    """Serves ``registry`` and the readiness ``checks`` on ``host:port``.

    Parameters
    ----------
    name
        The process, for the log line and the health answer (``bot``, ``worker``, ``web``).
    registry
        The process's metrics.
    checks
        Readiness checks by name (``gateway``, ``database``, ``store``).
    refreshers
        Coroutines that bring gauges up to date before each scrape (a queue's depth read from
        the database); one that fails or times out leaves its gauges as they were.
    """

    def __init__(
        self,
        name: str,
        registry: CollectorRegistry,
        *,
        checks: dict[str, Check] | None = None,
        refreshers: list[Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        self.name = name
        self.registry = registry
        self.checks = dict(checks or {})
        self.refreshers = list(refreshers or [])
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        """|coro| Listen on ``host:port`` (0: any free port; :attr:`port` says which).

        Raises
        ------
        ConfigError
            when the port is taken or the address cannot be bound (one line, exit code 2).
        """
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise _port_error(self.name, host, port, exc) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        logger.info("%s metrics on http://%s:%d/metrics", self.name, host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self) -> dict[str, Any]:
        """``{"process", "ready", "checks": {name: "ok" | reason}}``, checks run side by side."""

        async def run(check: Check) -> str:
            try:
                reason = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            except TimeoutError:
                return f"no answer within {CHECK_TIMEOUT_S:.0f} s"
            except Exception as exc:  # a check that raises is a failed check, with its reason
                return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            return reason or "ok"

        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        return {
            "process": self.name,
            "ready": all(r == "ok" for r in results),
            "checks": checks,
        }

    async def _health(self, request: web.Request) -> web.Response:
        answer = await self.health()
        return web.json_response(answer, status=200 if answer["ready"] else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self.refreshers:
            try:
                await asyncio.wait_for(refresh(), CHECK_TIMEOUT_S)
            except Exception as exc:  # stale gauges beat no scrape at all
                logger.debug("metrics refresh failed: %s", type(exc).__name__)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
