"""PostgreSQL drops every connection while the bot and the worker run: nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from dreamrate.db.models import Job, JobStatus
from dreamrate.exports.rating_export import current_ratings
from dreamrate.fake_discord import FakeDiscord, Member
from tests.bot.conftest import start_bot, stop_bot
from tests.bot.test_ratings_e2e import dream
from tests.conftest import _pg_execute

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADA, BOB = Member(61, "ada"), Member(62, "bob")


async def terminate_connections(database_url: str) -> int:
    """Kill every connection to the test database; return how many there were."""
    name = make_url(database_url).database
    rows = await _pg_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    return len(rows)


async def test_bot_and_worker_survive_pg_terminate_backend(
    postgres_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    server = FakeDiscord()
    await server.start()
    running = await start_bot(server, postgres_url, tmp_path / "data", tiny_models[0])
    try:
        first = await dream(server, ADA, "before the outage", images=2)
        await server.react(BOB, first[0], "7️⃣")
        # Every connection of bot and worker dies, twice, while work is in flight.
        _, token = await server.slash(
            ADA, "dream", [{"name": "prompt", "type": 3, "value": "during the outage"}]
        )
        killed = await terminate_connections(postgres_url)
        await server.react(BOB, first[1], "3️⃣")
        await server.react(ADA, first[0], "9️⃣")
        killed += await terminate_connections(postgres_url)
        assert killed >= 2  # the bot's and the worker's pooled connections at least
        second = await dream(server, BOB, "after the outage", images=1)
        await server.react(ADA, second[0], "5️⃣")
        expected = {
            (str(first[0]), str(BOB.id), 7.0),
            (str(first[1]), str(BOB.id), 3.0),
            (str(first[0]), str(ADA.id), 9.0),
            (str(second[0]), str(ADA.id), 5.0),
        }
        for _ in range(400):
            got = {
                (r["message_id"], r["rater_id"], r["rating"])
                for r in await current_ratings(running.engine)
            }
            if got == expected:
                break
            await asyncio.sleep(0.1)
        assert got == expected
        await server.wait_for(
            lambda: any(server.messages[m]["attachments"] for m in server.followups.get(token, [])),
            timeout=120,
        )
        async with running.engine.connect() as conn:  # type: ignore[attr-defined]
            states = (await conn.execute(select(Job.prompt, Job.status))).all()
        assert sorted(states) == sorted(
            [
                ("after the outage", JobStatus.DONE),
                ("before the outage", JobStatus.DONE),
                ("during the outage", JobStatus.DONE),
            ]
        )
    finally:
        await stop_bot(running)
        await server.stop()
