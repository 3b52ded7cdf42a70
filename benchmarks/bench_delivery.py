"""Delivery benchmark: members' /dream through the bot, under Discord's real rate limits.

The local Discord-compatible server enforces Discord's buckets (one bot reaction per 0.25 s
per channel, five messages per 5 s per channel, five webhook executes per 2 s per token,
50 requests per second in all). N members each send ``/dream images=4`` in one channel,
then in several; the bot (with its generation worker in a child process, as `dreamrate bot`
runs) renders, posts one message per image and seeds the rating emoji. It prints images
posted and reactions seeded per minute against the bound the buckets allow, the 429s and
invalid requests it drew, and acknowledgement latency (median, p99, the first command
after start). A last run seeds no emoji, to show what the reaction bucket costs.

    .venv/bin/python -m benchmarks.bench_delivery [--members 4] [--images 4] [--channels 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, median, percentile, print_table, tiny_models
from dreamrate.fake_discord import FakeDiscord, Member
from dreamrate.fake_discord.ratelimits import BUCKETS


async def run(*, members: int, images: int, channels: int, seed: bool, sd: Path) -> dict[str, Any]:
    from dreamrate.bot.client import DreamrateBot
    from dreamrate.bot.connection import point_discord_at
    from dreamrate.core.settings import load_settings
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade
    from dreamrate.services import WorkerProcess, build_repository

    server = FakeDiscord(bot_token="bench.token")
    await server.start()
    where = [(g, c) for g in server.guilds for c in server.channels_of(g)][:channels]
    assert len(where) == channels, f"the local world has {len(where)} channels"
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            data_dir=Path(folder),
            discord={"api_base": server.api_base, "gateway_url": server.gateway_url},
            generation={
                "model": str(sd),
                "default_steps": 2,
                "device": "cpu",
                "max_images": images,
                "max_batch": 8,
                "poll_interval": 0.1,
            },
            rating={"seed_reactions": seed},
        )
        point_discord_at(settings.discord.api_base, settings.discord.gateway_url)
        engine = create_engine(settings.database_url)
        await upgrade(engine)
        bot = DreamrateBot(
            settings=settings,
            engine=engine,
            repo=build_repository(settings, engine),
            worker=WorkerProcess(settings),
            delivery_interval=0.1,
        )
        task = asyncio.create_task(bot.start("bench.token"))
        try:
            await server.wait_connected()
            await server.wait_for(lambda: server.commands and bot.is_ready())
            emoji = len(bot.scale.reaction_emojis) if seed else 0
            people = [Member(20_000 + k, f"m{k}") for k in range(members * channels)]
            started = time.perf_counter()
            tokens = []
            for k, member in enumerate(people):
                guild, channel = where[k % channels]
                options = [
                    {"name": "prompt", "type": 3, "value": f"a lighthouse, take {k}"},
                    {"name": "images", "type": 4, "value": images},
                ]
                tokens.append(
                    await server.slash(member, "dream", options, guild=guild, channel=channel)
                )
            total = len(people) * images

            def done() -> list[int]:
                ids = [
                    m
                    for _, token in tokens
                    for m in server.followups.get(token, [])
                    if server.messages[m]["attachments"] and len(server.reactions[m]) >= emoji
                ]
                return ids if len(ids) == total else []

            await server.wait_for(done, timeout=1800)
            seconds = time.perf_counter() - started
        finally:
            await bot.close()
            task.cancel()
            await engine.dispose()
            await server.stop()
    latencies = [server.ack_latencies[i] for i, _ in tokens]
    limit, period = BUCKETS["reaction"]
    # The bound: per channel, one reaction per bucket window; seeding none, the GPU decides.
    bound = channels * 60 / (emoji * period / limit) if emoji else float("nan")
    return {
        "images": total,
        "seconds": seconds,
        "images_per_min": total / seconds * 60,
        "reactions_per_min": total * emoji / seconds * 60,
        "bound": bound,
        "rate_limited": server.rate_limited,
        "invalid": server.invalid_requests,
        "ack_first": latencies[0],
        "ack_median": median(latencies),
        "ack_p99": percentile(latencies, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4, help="members per channel")
    parser.add_argument("--images", type=int, default=4, help="images per /dream")
    parser.add_argument("--channels", type=int, default=4, help="channels of the spread run")
    args = parser.parse_args()
    sd = tiny_models()
    rows = []
    for label, channels, seed in (
        ("1 channel", 1, True),
        (f"{args.channels} channels", args.channels, True),
        ("1 channel, no emoji seeded", 1, False),
    ):
        r = asyncio.run(
            run(members=args.members, images=args.images, channels=channels, seed=seed, sd=sd)
        )
        share = r["images_per_min"] / r["bound"] if r["bound"] == r["bound"] else float("nan")
        rows.append(
            [
                label,
                r["images"],
                f"{r['seconds']:.1f}",
                f"{r['images_per_min']:.1f}",
                f"{r['bound']:.1f}" if r["bound"] == r["bound"] else "(GPU)",
                f"{share:.0%}" if share == share else "-",
                f"{r['reactions_per_min']:.0f}",
                r["rate_limited"],
                r["invalid"],
                f"{r['ack_first'] * 1000:.0f}",
                f"{r['ack_median'] * 1000:.0f}",
                f"{r['ack_p99'] * 1000:.0f}",
            ]
        )
    print_table(
        f"Delivery under Discord's rate limits: {args.members} members per channel x "
        f"/dream images={args.images} ({machine()})",
        [
            "run",
            "images",
            "s",
            "images/min",
            "bound/min",
            "of bound",
            "reactions/min",
            "429s",
            "invalid requests",
            "ack first (ms)",
            "ack median (ms)",
            "ack p99 (ms)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
