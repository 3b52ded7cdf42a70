"""A running bot against the local Discord-compatible server, with an in-process worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dreamrate.fake_discord import FakeDiscord

TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMw.fake.bot-token-never-printed"


@dataclass
class Running:
    discord: FakeDiscord
    bot: object
    engine: object
    settings: object
    data_dir: Path


async def start_bot(
    discord_server: FakeDiscord,
    database_url: str,
    data_dir: Path,
    tiny_sd: Path,
    *,
    with_worker: bool = True,
    discord: dict[str, object] | None = None,
    embedding: dict[str, object] | None = None,
    metrics: dict[str, object] | None = None,
    **env: object,
) -> Running:
    """The bot as `dreamrate bot` runs it: commands synced globally (the default), and the
    generation worker in a process of its own."""
    from dreamrate.bot.client import DreamrateBot
    from dreamrate.bot.connection import point_discord_at
    from dreamrate.core.settings import load_settings
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade
    from dreamrate.services import WorkerProcess, build_repository

    settings = load_settings(
        data_dir=data_dir,
        database={"url": database_url},
        discord={
            "api_base": discord_server.api_base,
            "gateway_url": discord_server.gateway_url,
            "rate_cooldown": 0,
            **(discord or {}),
        },
        generation={
            "model": str(tiny_sd),
            "default_steps": 2,
            "device": "cpu",
            "blocked_terms": ["gore"],
            "poll_interval": 0.1,
            **env,
        },
        **({"embedding": embedding} if embedding else {}),
        **({"metrics": metrics} if metrics else {}),
    )
    point_discord_at(settings.discord.api_base, settings.discord.gateway_url)
    engine = create_engine(database_url)
    await upgrade(engine)
    repo = build_repository(settings, engine)
    worker = WorkerProcess(settings) if with_worker else None
    bot = DreamrateBot(
        settings=settings, engine=engine, repo=repo, worker=worker, delivery_interval=0.1
    )
    asyncio.get_running_loop().create_task(bot.start(TOKEN))
    await discord_server.wait_connected()
    await discord_server.wait_for(lambda: discord_server.commands and bot.is_ready())
    return Running(discord_server, bot, engine, settings, data_dir)


async def settled(running: Running, *, backfills: int = 0) -> None:
    """Until every reaction the server sent this bot is recorded, and at least ``backfills``
    backfills (one per connect and resume) have run.

    Counts are per bot and per gateway session: after a fresh IDENTIFY of the same bot
    (not a RESUME) the server starts again from zero and this returns too early.
    """
    server, recorder = running.discord, running.bot.reactions  # type: ignore[attr-defined]
    await server.wait_for(
        lambda: recorder.received >= server.session_reactions and recorder.backfills >= backfills
    )
    await recorder.drained()


async def stop_bot(running: Running) -> None:
    await running.bot.close()  # type: ignore[attr-defined]
    await running.engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture
async def discord_server() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def running(
    discord_server: FakeDiscord, database_url: str, tmp_path: Path, tiny_models
) -> AsyncIterator[Running]:  # type: ignore[no-untyped-def]
    bot = await start_bot(discord_server, database_url, tmp_path / "data", tiny_models[0])
    yield bot
    await stop_bot(bot)
