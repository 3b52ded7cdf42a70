"""The metrics and health server every long-running process uses, Discord's invalid-request
arithmetic, JSON logs, and the one-line errors of a taken metrics port."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from dreamrate.bot.metrics import BotMetrics
from dreamrate.core.errors import ConfigError
from dreamrate.core.metrics import MetricsServer, SlidingCount
from dreamrate.db.engine import create_engine, database_down
from tests.metrics_helpers import scrape, value


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_metrics_and_health_answer_and_say_why_not_ready() -> None:
    registry = CollectorRegistry()
    served = Counter("dreamrate_test_things", "Things.", registry=registry)
    gateway_up = asyncio.Event()
    refreshed: list[int] = []

    async def gateway() -> str | None:
        return None if gateway_up.is_set() else "no gateway session"

    async def broken() -> str | None:
        raise RuntimeError("socket closed\nsecond line never shown")

    async def refresh() -> None:
        refreshed.append(1)
        served.inc()

    server = MetricsServer("bot", registry, checks={"gateway": gateway}, refreshers=[refresh])
    await server.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, body = await _get(f"{base}/healthz")
        assert status == 503
        assert json.loads(body) == {
            "process": "bot",
            "ready": False,
            "checks": {"gateway": "no gateway session"},
        }
        gateway_up.set()
        status, body = await _get(f"{base}/healthz")
        assert status == 200 and json.loads(body)["checks"] == {"gateway": "ok"}
        server.checks["database"] = broken
        status, body = await _get(f"{base}/healthz")
        assert status == 503
        assert json.loads(body)["checks"]["database"] == "RuntimeError: socket closed"
        # Each scrape refreshes first, then reads the registry (a real Prometheus parser).
        assert value(await scrape(base), "dreamrate_test_things_total") == 1
        assert value(await scrape(base), "dreamrate_test_things_total") == 2
        assert len(refreshed) == 2
    finally:
        await server.stop()


async def test_a_check_that_hangs_is_not_ready_instead_of_a_hung_scrape(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("dreamrate.core.metrics.CHECK_TIMEOUT_S", 0.05)
    never = asyncio.Event()

    async def hangs() -> str | None:
        await never.wait()
        return None

    server = MetricsServer("worker", CollectorRegistry(), checks={"database": hangs})
    answer = await server.health()
    assert answer["ready"] is False and answer["checks"]["database"].startswith("no answer within")


async def test_database_down_names_the_failure_without_the_url(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert await database_down(engine) is None
    finally:
        await engine.dispose()
    gone = create_engine("postgresql+asyncpg://postgres:hunter2hunter2@127.0.0.1:1/test")
    try:
        reason = await database_down(gone)
    finally:
        await gone.dispose()
    assert reason is not None and reason.startswith("the database does not answer (")
    assert "hunter2" not in reason and "127.0.0.1" not in reason


async def test_a_taken_port_is_one_line() -> None:
    first = MetricsServer("web", CollectorRegistry())
    await first.start("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError) as refused:
            await MetricsServer("web", CollectorRegistry()).start("127.0.0.1", first.port or 0)
        assert str(refused.value) == (
            f"web metrics: 127.0.0.1:{first.port} is taken; choose another --metrics-port"
        )
    finally:
        await first.stop()


def test_worker_with_a_taken_metrics_port_exits_2_before_loading_anything(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expected = (
            f"error: worker metrics: 127.0.0.1:{port} is taken; choose another --metrics-port"
        )
        result = cli("worker", "--metrics-port", str(port))
        assert (result.code, result.err.strip().splitlines()) == (2, [expected])
        # The bot checks its own worker's port before it connects (the child binds it later).
        monkeypatch.setenv("DISCORD_TOKEN", "x" * 40)
        monkeypatch.setenv("DREAMRATE_METRICS_WORKER_PORT", str(port))
        result = cli("bot")
        assert (result.code, result.err.strip().splitlines()) == (2, [expected])


def test_sliding_count_forgets_what_left_the_window() -> None:
    now = [0.0]
    count = SlidingCount(600.0, clock=lambda: now[0])
    for t in (0.0, 100.0, 599.0):
        now[0] = t
        count.add()
    assert count() == 3
    now[0] = 650.0
    assert count() == 2  # the one at 0 s is more than 10 minutes old
    now[0] = 1200.0
    assert count() == 0


def test_discord_counts_401_403_and_non_shared_429_as_invalid() -> None:
    now = [0.0]
    metrics = BotMetrics(clock=lambda: now[0])
    for status, headers in (
        (200, {}),
        (204, {}),
        (401, {}),
        (403, {}),
        (404, {}),  # a 404 is not an invalid request in Discord's count
        (429, {"X-RateLimit-Scope": "user"}),
        (429, {"X-RateLimit-Scope": "shared"}),  # a shared resource's limit: not the bot's
    ):
        metrics.response(status, headers)
    registry = metrics.registry
    assert registry.get_sample_value("dreamrate_bot_discord_invalid_requests_10m") == 3
    assert registry.get_sample_value("dreamrate_bot_discord_rate_limited_total") == 2
    assert (
        registry.get_sample_value("dreamrate_bot_discord_responses_total", {"status": "2xx"}) == 2
    )
    assert registry.get_sample_value("dreamrate_bot_discord_invalid_requests_limit") == 10_000
    now[0] = 601.0
    assert registry.get_sample_value("dreamrate_bot_discord_invalid_requests_10m") == 0


def test_json_logs_are_one_object_a_line_with_secrets_scrubbed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.core.log import configure_logging

    secret = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gabcde.json-secret"
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", secrets=[secret], log_format="json")
        log = logging.getLogger("dreamrate.test")
        log.info("connecting with %s to %s", secret, "the gateway")
        try:
            raise RuntimeError(f"refused {secret}")
        except RuntimeError:
            log.exception("login failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and secret not in stream.getvalue()
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "connecting with *** to the gateway"
    assert first["level"] == "INFO" and first["logger"] == "dreamrate.test"
    assert first["time"][:4].isdigit() and isinstance(first["process"], int)
    assert second["message"].startswith("login failed\nTraceback")
    assert "RuntimeError: refused ***" in second["message"]


def test_log_format_is_checked_like_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamrate.core.settings import load_settings

    monkeypatch.setenv("DREAMRATE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match=r"^DREAMRATE_LOG_FORMAT: Input should be 'rich' or"):
        load_settings()
    monkeypatch.setenv("DREAMRATE_LOG_FORMAT", "JSON")
    assert load_settings().log_format == "json"


def test_settings_name_every_secret_for_the_logs(tmp_path: Path) -> None:
    from dreamrate.core.settings import load_settings

    settings = load_settings(
        database={"url": "postgresql+asyncpg://dreamrate:pg-password-123@db.internal/dreamrate"},
        discord={"token": "bot-token-1234567890"},
        web={"client_secret": "oauth-secret-123", "secret_key": "cookie-key-12345678"},
    )
    assert sorted(settings.secrets()) == sorted(
        ["bot-token-1234567890", "oauth-secret-123", "cookie-key-12345678", "pg-password-123"]
    )


def test_a_scrape_during_torchs_import_reads_no_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker imports torch on its render thread while a scrape may come: a module that
    is half made (no ``cuda`` yet) reads as 0, not as a failed scrape."""
    import sys
    import types

    from dreamrate.generation.worker_metrics import WorkerMetrics

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    sample = WorkerMetrics().registry.get_sample_value
    assert sample("dreamrate_worker_gpu_memory_bytes") == 0
