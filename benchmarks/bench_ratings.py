"""Ratings benchmark: a burst of reaction events over the gateway to the running bot.

20,000 add/remove events from 500 members on 50 image messages go through the
local Discord-compatible server to an unmodified discord.py client; every
event must reach ``rating_events`` and the final ratings must equal a replay
of the script. Prints events/s and event-to-log latency.

Run: .venv/bin/python -m benchmarks.bench_ratings [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

from benchmarks.common import (
    machine,
    median,
    percentile,
    postgres_database,
    print_table,
    sqlite_database,
)
from dreamrate.db.models import Image, Job, RatingEvent, User
from dreamrate.exports.rating_export import current_ratings
from dreamrate.fake_discord import CHANNEL_ID, FakeDiscord, Member
from dreamrate.ratings.decisions import present_emojis

EMOJIS = ["1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣", "🔟"]


async def run(url: str, events: int, members: int, images: int) -> list[object]:
    from dreamrate.bot.client import DreamrateBot
    from dreamrate.bot.connection import point_discord_at
    from dreamrate.core.settings import load_settings
    from dreamrate.db.engine import create_engine
    from dreamrate.db.models import RatingEventKind
    from dreamrate.fake_discord import GUILD_ID
    from dreamrate.services import build_repository

    server = FakeDiscord(bot_token="bench.token")
    await server.start()
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            data_dir=Path(folder),
            database={"url": url},
            discord={
                "api_base": server.api_base,
                "gateway_url": server.gateway_url,
                "guilds": [GUILD_ID],
            },
        )
        point_discord_at(settings.discord.api_base, settings.discord.gateway_url)
        engine = create_engine(url)
        messages = [int(server._store_message(CHANNEL_ID, {}, [])["id"]) for _ in range(images)]
        async with engine.begin() as conn:
            owner = (
                await conn.execute(
                    insert(User).values(discord_id=1, name="owner").returning(User.id)
                )
            ).scalar_one()
            job = (
                await conn.execute(
                    insert(Job)
                    .values(
                        requester_id=owner,
                        prompt="p",
                        model="m",
                        width=64,
                        height=64,
                        steps=1,
                        guidance=0,
                        seed=1,
                        num_images=images,
                    )
                    .returning(Job.id)
                )
            ).scalar_one()
            await conn.execute(
                insert(Image),
                [
                    {
                        "job_id": job,
                        "index": i,
                        "seed": i,
                        "width": 64,
                        "height": 64,
                        "sha256": "0" * 64,
                        "path": "x",
                        "discord_message_id": m,
                        "discord_channel_id": CHANNEL_ID,
                    }
                    for i, m in enumerate(messages)
                ],
            )
        bot = DreamrateBot(
            settings=settings, engine=engine, repo=build_repository(settings, engine)
        )
        # A throughput benchmark: lift the per-member allowance (scripted bursts are the point).
        bot.reactions.burst = float(events)
        task = asyncio.create_task(bot.start("bench.token"))
        await server.wait_connected()
        await server.wait_for(bot.is_ready)
        await asyncio.sleep(1.0)  # let the start-up backfill finish: this measures live events

        rng = random.Random(0)
        people = [Member(10_000 + i, f"m{i}") for i in range(members)]
        on: dict[tuple[int, int], list[str]] = {}
        script: list[tuple[int, int, str, bool]] = []
        for _ in range(events):
            member, message = rng.choice(people), rng.choice(messages)
            mine = on.setdefault((member.id, message), [])
            if mine and rng.random() < 0.35:
                emoji = rng.choice(mine)
                mine.remove(emoji)
                script.append((member.id, message, emoji, False))
            else:
                emoji = rng.choice(EMOJIS)
                if emoji in mine:
                    mine.remove(
                        emoji
                    )  # re-adding an emoji already there is not an event on Discord
                    script.append((member.id, message, emoji, False))
                else:
                    mine.append(emoji)
                    script.append((member.id, message, emoji, True))
        by_id = {p.id: p for p in people}
        sent: list[float] = []
        start = time.perf_counter()
        wall_start = datetime.now(UTC)
        for user, message, emoji, added in script:
            sent.append(time.perf_counter())
            await (server.react if added else server.unreact)(by_id[user], message, emoji)
        while True:
            async with engine.connect() as conn:
                logged = await conn.scalar(select(func.count()).select_from(RatingEvent))
            if logged >= len(script):
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        RatingEvent.discord_user_id,
                        RatingEvent.message_id,
                        RatingEvent.emoji,
                        RatingEvent.kind,
                        RatingEvent.received_at,
                    ).order_by(RatingEvent.id)
                )
            ).all()
        in_order = [(r[0], r[1], r[2], r[3] is RatingEventKind.ADD) for r in rows] == script
        latencies = [
            ((row.received_at - wall_start).total_seconds() - (t - start)) * 1000
            for row, t in zip(rows, sent, strict=True)
        ]
        expected = set()
        for (user, message), _ in on.items():
            present = present_emojis(
                (RatingEventKind.ADD if a else RatingEventKind.REMOVE, e)
                for u, m, e, a in script
                if (u, m) == (user, message)
            )
            if present:
                expected.add((str(message), str(user), float(EMOJIS.index(present[-1]) + 1)))
        exported = {
            (r["message_id"], r["rater_id"], r["rating"]) for r in await current_ratings(engine)
        }
        await bot.close()
        task.cancel()
        await engine.dispose()
    await server.stop()
    return [
        len(script),
        len(rows),
        "yes" if in_order else "NO",
        "yes" if exported == expected else "NO",
        f"{len(script) / elapsed:.0f}",
        f"{median(latencies):.0f}",
        f"{percentile(latencies, 99):.0f}",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--members", type=int, default=500)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rows = []
    async with sqlite_database() as url:
        rows.append(["SQLite", *await run(url, args.events, args.members, 50)])
    async with postgres_database() as url:
        rows.append(["PostgreSQL", *await run(url, args.events, args.members, 50)])
    print_table(
        f"{args.events} reaction events from {args.members} members over the gateway",
        [
            "database",
            "sent",
            "logged",
            "log in gateway order",
            "ratings exact",
            "events/s",
            "p50 ms",
            "p99 ms",
        ],
        rows,
    )


if __name__ == "__main__":
    asyncio.run(main())
