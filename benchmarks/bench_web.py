"""The web home under load: 100k images and 1M ratings in PostgreSQL, 200 members at once.

1. A fresh PostgreSQL database is filled with COPY: ``--images`` images in one guild (one
   job each), ``--members`` members and ``--ratings`` ratings (distinct member/image pairs,
   values 1-10), then ANALYZE.
2. Queries per request: the app in this process, one request of each kind through httpx's
   ASGI transport, counting the SQL statements the engine executes.
3. Load: ``dreamrate web``'s app in a uvicorn process of its own; an async load generator
   here (aiohttp, 127.0.0.1) runs ``--concurrency`` members, each logged in with a signed
   session, each doing one thing at a time with a think time (exponential, mean
   ``--think`` s) between: scroll the gallery (the next page of the one before, best
   first), open an image page, rate an image. Prints requests/s, p50/p99 and errors.

Run: .venv/bin/python -m benchmarks.bench_web [--images 100000] [--ratings 1000000]
     [--members 5000] [--concurrency 200] [--seconds 60] [--think 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine, percentile, postgres_database, print_table

GUILD = 1_000_000_000_000_000_001
KEY = "bench-web-session-key"
CSRF = "bench-csrf-token"


def _cookie(discord_id: int) -> str:
    from itsdangerous import TimestampSigner

    session = {
        "uid": str(discord_id),
        "name": f"member{discord_id - 10_000}",  # as in the users table: no rename per click
        "guilds": {str(GUILD): ["bench", False]},
        "csrf": CSRF,
        "sid": f"bench-{discord_id}",  # its login is in web_sessions (see fill)
        "at": time.time(),
    }
    data = base64.b64encode(json.dumps(session).encode())
    return TimestampSigner(KEY).sign(data).decode()


async def fill(url: str, images: int, ratings: int, members: int, seed: int = 0) -> None:
    """Members, one job and image each, and distinct random ratings, with COPY."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username,
        password=parsed.password, database=parsed.database,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    try:
        await conn.copy_records_to_table(
            "users",
            columns=["id", "discord_id", "name", "banned", "opted_out", "baseline_pending",
                     "created_at", "updated_at"],
            records=[(i, 10_000 + i, f"member{i}", False, False, False, now, now)
                     for i in range(1, members + 1)],
        )  # fmt: skip
        words = ["castle", "forest", "robot", "ocean", "city", "dragon", "portrait", "garden"]
        await conn.copy_records_to_table(
            "jobs",
            columns=["id", "requester_id", "guild_id", "channel_id", "prompt", "model", "width",
                     "height", "steps", "guidance", "scheduler", "num_images", "seed", "status",
                     "priority", "attempts", "progress", "cancel_requested", "created_at",
                     "updated_at"],
            records=[(j, 1 + j % members, GUILD, GUILD + 1,
                      f"a {words[j % 8]} number {j}", "stabilityai/sd-turbo", 512, 512, 1, 0.0,
                      "default", 1, j, "done", 0, 1, 1.0, False, now, now)
                     for j in range(1, images + 1)],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "images",
            columns=["id", "job_id", "index", "seed", "width", "height", "sha256", "path",
                     "discord_channel_id", "discord_message_id", "flagged", "removed",
                     "created_at"],
            records=[(i, i, 0, i, 512, 512, f"{i:064x}", f"{i % 256:02x}/{i:064x}.png",
                      GUILD + 1, GUILD + 10_000 + i, False, False, now)
                     for i in range(1, images + 1)],
        )  # fmt: skip
        # Distinct (member, image) pairs: a random sample of the grid's cells.
        cells = rng.choice(members * images, size=ratings, replace=False)
        users, imgs = cells // images + 1, cells % images + 1
        values = rng.integers(1, 11, size=ratings)
        await conn.copy_records_to_table(
            "ratings",
            columns=["id", "user_id", "image_id", "value", "scale", "source", "rated_at",
                     "created_at", "updated_at"],
            records=[(k + 1, int(u), int(i), float(v), "sac-10", "reaction", now, now, now)
                     for k, (u, i, v) in enumerate(zip(users, imgs, values, strict=True))],
        )  # fmt: skip
        # Each member's login, as the web keeps it (the cookie names it: _cookie).
        await conn.copy_records_to_table(
            "web_sessions",
            columns=["id", "discord_id", "created_at", "expires_at"],
            records=[(hashlib.sha256(f"bench-{10_000 + i}".encode()).hexdigest(), 10_000 + i,
                      now, now + timedelta(days=1)) for i in range(1, members + 1)],
        )  # fmt: skip
        for table in ("users", "jobs", "images", "ratings"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _settings(url: str, data_dir: Path, port: int) -> Any:
    from dreamrate.core.settings import load_settings

    return load_settings(
        data_dir=data_dir,
        database={"url": url},
        web={"host": "127.0.0.1", "port": port, "secret_key": KEY, "client_secret": "x"},
    )


async def count_queries(url: str, data_dir: Path, image_ids: list[int]) -> dict[str, int]:
    """SQL statements per request of each kind, the app in this process."""
    import httpx
    from sqlalchemy import event

    from dreamrate.db.engine import create_engine
    from dreamrate.web.app import create_app

    engine = create_engine(url)
    app = create_app(_settings(url, data_dir, 1), engine)
    counted = [0]

    def count(*_: object) -> None:
        counted[0] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    counts: dict[str, int] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
        client.cookies.set("dreamrate_session", _cookie(10_001))
        steps = [
            ("gallery page", "GET", f"/g/{GUILD}", None),
            ("image page", "GET", f"/g/{GUILD}/i/{image_ids[0]}", None),
            ("rating click", "POST", f"/g/{GUILD}/rate", {"image_id": image_ids[1], "value": 7}),
        ]
        for name, method, path, body in steps:
            for _ in range(2):  # the second: warm caches, as under load
                counted[0] = 0
                response = await client.request(
                    method, path, json=body, headers={"X-CSRF-Token": CSRF}
                )
                assert response.status_code == 200, (name, response.status_code, response.text)
            counts[name] = counted[0]
    await engine.dispose()
    return counts


def serve(url: str, data_dir: str, port: int) -> None:
    """The server process: the app under uvicorn, as ``dreamrate web`` runs it."""
    import uvicorn

    from dreamrate.db.engine import create_engine
    from dreamrate.web.app import create_app

    async def run() -> None:
        engine = create_engine(url)
        app = create_app(_settings(url, Path(data_dir), port), engine)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        await uvicorn.Server(config).serve()

    asyncio.run(run())


async def load(
    base: str, members: list[int], image_ids: list[int], seconds: float, think: float
) -> dict[str, list[tuple[float, int]]]:
    """Each member one action at a time for ``seconds``; (latency s, status) per action."""
    import aiohttp

    results: dict[str, list[tuple[float, int]]] = defaultdict(list)
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def member(discord_id: int, rng: random.Random) -> None:
            cookies = {"Cookie": f"dreamrate_session={_cookie(discord_id)}"}
            next_page = f"{base}/g/{GUILD}"
            await asyncio.sleep(rng.uniform(0, think))
            while time.monotonic() < deadline:
                roll = rng.random()
                started = time.perf_counter()
                if roll < 0.4:
                    kind = "gallery page"
                    async with http.get(next_page, headers=cookies) as r:
                        html = await r.text()
                        status = r.status
                    found = re.search(r'data-more="([^"]+)"', html)
                    next_page = (
                        base + found.group(1).replace("&amp;", "&")
                        if found
                        else f"{base}/g/{GUILD}"
                    )
                elif roll < 0.7:
                    kind = "image page"
                    async with http.get(
                        f"{base}/g/{GUILD}/i/{rng.choice(image_ids)}", headers=cookies
                    ) as r:
                        await r.read()
                        status = r.status
                else:
                    kind = "rating click"
                    async with http.post(
                        f"{base}/g/{GUILD}/rate",
                        json={"image_id": rng.choice(image_ids), "value": rng.randint(1, 10)},
                        headers={**cookies, "X-CSRF-Token": CSRF},
                    ) as r:
                        await r.read()
                        status = r.status
                results[kind].append((time.perf_counter() - started, status))
                await asyncio.sleep(rng.expovariate(1 / think))

        await asyncio.gather(*(member(m, random.Random(m)) for m in members))
    return results


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    async with postgres_database() as url:
        started = time.perf_counter()
        await fill(url, args.images, args.ratings, args.members)
        print(
            f"filled {args.images:,} images, {args.ratings:,} ratings, {args.members:,} members "
            f"in {time.perf_counter() - started:.1f} s"
        )
        image_ids = list(range(1, args.images + 1))
        with tempfile.TemporaryDirectory() as data_dir:
            counts = await count_queries(url, Path(data_dir), image_ids)
            port = 18_000 + os.getpid() % 1000
            server = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_web", "--serve", url, data_dir, str(port)]
            )
            try:
                import aiohttp

                base = f"http://127.0.0.1:{port}"
                for _ in range(200):
                    try:
                        async with aiohttp.ClientSession() as http, http.get(base) as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                # Warm, as a server is a minute after it starts: the first gallery page
                # computes the guild's ranking (timed here), every later one reuses it.
                async with aiohttp.ClientSession() as http:
                    started = time.perf_counter()
                    async with http.get(
                        f"{base}/g/{GUILD}",
                        headers={"Cookie": f"dreamrate_session={_cookie(10_001)}"},
                    ) as r:
                        assert r.status == 200, await r.text()
                    print(
                        f"first gallery page (ranking computed): {time.perf_counter() - started:.2f} s"
                    )
                rng = random.Random(0)
                members = [10_000 + rng.randint(1, args.members) for _ in range(args.concurrency)]
                results = await load(base, members, image_ids, args.seconds, args.think)
            finally:
                server.terminate()
                server.wait(timeout=30)
    total = sum(len(v) for v in results.values())
    rows = []
    for kind in ("gallery page", "image page", "rating click"):
        got = results.get(kind, [])
        latencies = [t * 1000 for t, _ in got]
        errors = sum(1 for _, s in got if s >= 400)
        rows.append(
            [
                kind,
                len(got),
                f"{len(got) / args.seconds:.1f}",
                f"{percentile(latencies, 50):.1f}" if got else "-",
                f"{percentile(latencies, 99):.1f}" if got else "-",
                errors,
                counts.get(kind, "-"),
            ]
        )
    print_table(
        f"{args.concurrency} members for {args.seconds:.0f} s (think time {args.think} s), "
        f"{total / args.seconds:.1f} requests/s in all",
        ["request", "count", "per s", "p50 ms", "p99 ms", "errors", "SQL statements"],
        rows,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--think", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
