"""A deployment you can watch: the bot, its worker (a process of its own) and the web home
serve /metrics and /healthz while a member dreams and rates, and the figures move.

On SQLite only: what is measured does not depend on the database (the database check's
``SELECT 1`` is tested on both in tests/test_metrics.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from dreamrate.bot.serving import serve_metrics as bot_metrics_server
from dreamrate.fake_discord import FakeDiscord, Member
from tests.bot.conftest import settled, start_bot, stop_bot
from tests.bot.test_dream_e2e import image_messages
from tests.metrics_helpers import Samples, scrape, value
from tests.web.conftest import free_socket, register_accounts, serve


async def _health(base: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as response:
        return response.status, json.loads(await response.text())


async def _until(
    probe: Callable[[], Awaitable[bool]], timeout: float = 60.0, every: float = 0.1
) -> None:
    """Until ``probe`` says yes (a condition over HTTP, asked again every ``every`` s)."""
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(every)


async def test_bot_worker_and_web_report_what_happened(
    sqlite_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    discord = FakeDiscord()
    await discord.start()
    register_accounts(discord)
    with free_socket() as sock:  # a port for the worker child to bind (closed before it does)
        worker_port = sock.getsockname()[1]
    _, engine, app, web_base, web_task, web_server = await serve(
        discord, sqlite_url, tmp_path / "w"
    )
    web_metrics = app.state.metrics_server  # what `dreamrate web --metrics-port` starts
    await web_metrics.start("127.0.0.1", 0)
    running = await start_bot(
        discord,
        sqlite_url,
        tmp_path / "b",
        tiny_models[0],
        metrics={"worker_port": worker_port},
    )
    bot = running.bot
    bot_server = bot_metrics_server(bot)  # type: ignore[arg-type]
    await bot_server.start("127.0.0.1", 0)
    bot_base = f"http://127.0.0.1:{bot_server.port}"
    worker_base = f"http://127.0.0.1:{worker_port}"
    try:

        async def worker_ready() -> bool:
            try:
                return (await _health(worker_base))[0] == 200
            except aiohttp.ClientConnectionError:
                return False  # the child is still starting

        await _until(worker_ready)
        assert await _health(bot_base) == (
            200,
            {"process": "bot", "ready": True, "checks": {"gateway": "ok", "database": "ok"}},
        )
        bot_before, worker_before = await scrape(bot_base), await scrape(worker_base)
        assert value(worker_before, "dreamrate_worker_images_total") == 0

        ada = Member(51, "ada")
        _, token = await discord.slash(
            ada,
            "dream",
            [
                {"name": "prompt", "type": 3, "value": "a watched pot"},
                {"name": "images", "type": 4, "value": 2},
            ],
        )
        posted = await discord.wait_for(lambda: len(image_messages(discord, token)) == 2)
        assert posted
        first = int(image_messages(discord, token)[0]["id"])
        await discord.wait_for(lambda: "1️⃣" in discord.reactions.get(first, {}))
        await discord.react(ada, first, "7️⃣")
        await settled(running)

        def served_2xx() -> int:
            return sum(n for s, n in discord.statuses.items() if 200 <= s < 300)

        def finished() -> bool:  # the job's last edit and the bot's own emoji on each image
            scale = running.settings.rating.emojis  # type: ignore[attr-defined]
            return "done" in discord.originals[token].get("content", "") and all(
                len(discord.reactions.get(int(m["id"]), {})) >= len(scale)
                for m in image_messages(discord, token)
            )

        await discord.wait_for(finished)

        async def delivered() -> bool:
            # Nothing waits, and every answer the server sent has reached the bot.
            now = await scrape(bot_base)
            return (
                value(now, "dreamrate_bot_deliveries_waiting") == 0
                and value(now, "dreamrate_bot_discord_responses_total", status="2xx")
                == served_2xx()
            )

        await _until(delivered)
        bot_after, worker_after = await scrape(bot_base), await scrape(worker_base)

        def moved(name: str, before: Samples, after: Samples, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        # The bot: the events it was sent, what Discord answered it, nothing left waiting.
        events = "dreamrate_bot_gateway_events_total"
        assert moved(events, bot_before, bot_after, type="INTERACTION_CREATE") == 1
        assert moved(events, bot_before, bot_after, type="MESSAGE_REACTION_ADD") >= 1
        answered = {
            s: value(bot_after, "dreamrate_bot_discord_responses_total", status=s)
            for s in ("2xx", "429")
        }
        # Every REST call of this run was the bot's: its count is the server's.
        assert answered["2xx"] == served_2xx()
        assert answered["429"] == discord.rate_limited
        assert value(bot_after, "dreamrate_bot_discord_invalid_requests_10m") == (
            discord.invalid_requests
        )
        assert value(bot_after, "dreamrate_bot_reactions_waiting") == 0
        assert value(bot_after, "dreamrate_bot_rating_log_lag_seconds") == 0
        latency = value(bot_after, "dreamrate_bot_gateway_latency_seconds")
        assert 0 <= latency < 60  # a number once a heartbeat was acknowledged

        # The worker: one batch of two images, one job done, nothing queued.
        assert moved("dreamrate_worker_images_total", worker_before, worker_after) == 2
        assert moved("dreamrate_worker_render_seconds_count", worker_before, worker_after) == 1
        assert value(worker_after, "dreamrate_worker_batch_images_sum") == 2
        assert (
            moved("dreamrate_worker_attempts_total", worker_before, worker_after, outcome="done")
            == 1
        )
        assert value(worker_after, "dreamrate_worker_images_per_second") > 0
        assert value(worker_after, "dreamrate_worker_queue_renders") == 0
        assert value(worker_after, "dreamrate_worker_gpu_memory_bytes") == 0  # no GPU here

        # The web home: each request under its route's template; a made-up path as "other".
        async with aiohttp.ClientSession() as browser:
            for path in ("/", "/healthz", "/g/123/rate", "/no/such/page"):
                async with browser.get(f"{web_base}{path}", allow_redirects=False) as response:
                    await response.read()
        web_base_metrics = f"http://127.0.0.1:{web_metrics.port}"
        web_after = await scrape(web_base_metrics)
        requests = "dreamrate_web_requests_total"
        assert value(web_after, requests, method="GET", route="/healthz", status="200") == 1
        assert value(web_after, requests, method="GET", route="/", status="200") == 1
        rate_route = "/g/{guild_id:int}/rate"
        assert (
            sum(
                v
                for (n, labels), v in web_after.items()
                if n == requests and ("route", rate_route) in labels
            )
            == 1
        )
        assert value(web_after, requests, method="GET", route="other", status="404") == 1
        assert value(web_after, "dreamrate_web_request_seconds_count", route="/") == 1
        assert value(web_after, "dreamrate_web_errors_total", route="/") == 0
        assert (await _health(web_base_metrics))[0] == 200
        assert (await _health(web_base))[1]["ready"] is True
    finally:
        await stop_bot(running)
        # Closed, the bot is not ready any more (the same answer as a lost gateway session).
        status, answer = await _health(bot_base)
        await bot_server.stop()
        await web_metrics.stop()
        web_server.should_exit = True
        await web_task
        await engine.dispose()
        await discord.stop()
    assert status == 503 and answer["checks"]["gateway"] == "the bot is closed"  # type: ignore[index]
