"""Three hosts, one PostgreSQL, one S3 store: the bot, a `dreamrate worker` process and the
web home, each with a data folder of its own, share nothing but the database URL and the
store. A /dream is rendered by the worker, posted by the bot, shown by the web home, rated
on Discord and exported, and no host keeps an image of its own."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from dreamrate.db.models import Image
from dreamrate.fake_discord import FakeDiscord
from tests.bot.conftest import settled, start_bot, stop_bot
from tests.storage.conftest import S3
from tests.web.conftest import ALICE, Web, client, login, register_accounts, serve

pytestmark = pytest.mark.postgres

DREAMRATE = Path(sys.executable).parent / "dreamrate"


def dreamrate(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``dreamrate ARGS`` as another host runs it: its own environment and data folder."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DREAMRATE_")}
    with log.open("wb") as out:
        return subprocess.Popen([str(DREAMRATE), *args], env=base | env, stdout=out, stderr=out)


async def test_bot_worker_and_web_home_on_three_hosts_share_one_database_and_one_store(
    postgres_url: str, s3: S3, tiny_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    store_url = s3.url("community")
    monkeypatch.setenv("DREAMRATE_STORAGE_URL", store_url)  # the bot's and the web's settings
    tiny = str(tiny_models[0])
    hosts = {name: tmp_path / name for name in ("bot", "worker", "web")}
    host_env = {
        "DREAMRATE_DATABASE_URL": postgres_url,
        "DREAMRATE_STORAGE_URL": store_url,
        "DREAMRATE_GENERATION_MODEL": tiny,
        "DREAMRATE_GENERATION_DEVICE": "cpu",
        "DREAMRATE_GENERATION_POLL_INTERVAL": "0.1",
    }  # and the AWS variables, from the s3 fixture
    discord = FakeDiscord()
    await discord.start()
    register_accounts(discord)
    bot = await start_bot(discord, postgres_url, hosts["bot"], tiny_models[0], with_worker=False)
    worker = dreamrate(
        ["worker", "--id", "gpu-host"],
        host_env | {"DREAMRATE_DATA_DIR": str(hosts["worker"])},
        tmp_path / "worker.log",
    )
    settings, engine, app, base, serving, server = await serve(discord, postgres_url, hosts["web"])
    try:
        # 1. Rendered on the worker's host, posted by the bot from the store.
        _, token = await discord.slash(
            ALICE,
            "dream",
            [
                {"name": "prompt", "type": 3, "value": "a lighthouse"},
                {"name": "seed", "type": 4, "value": 7},
            ],
        )

        def posted() -> list[int]:
            return [m for m in discord.followups.get(token, []) if discord.files.get(m)]

        await discord.wait_for(lambda: posted() or worker.poll() is not None, timeout=180)
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        (message_id,) = posted()
        async with engine.connect() as conn:
            image = (await conn.execute(select(Image))).one()
        key = f"community/{image.path}"
        assert s3.object_keys() == [key]
        (delivered,) = discord.files[message_id]
        assert delivered == s3.object(key)
        assert hashlib.sha256(delivered).hexdigest() == image.sha256

        # 2. Rated on Discord.
        await discord.react(ALICE, message_id, "7️⃣")
        await settled(bot)

        # 3. Shown by the web home, which read it from the store.
        async with client() as alice:
            await login(alice, Web(base, discord, engine, settings, app), ALICE)
            async with alice.get(f"{base}/thumb/{image.id}.webp") as answer:
                assert answer.status == 200 and answer.content_type == "image/webp"
                thumb = PILImage.open(io.BytesIO(await answer.read()))
                assert thumb.size == (image.width, image.height)  # 64 px: under the size
            async with alice.get(f"{base}/img/{image.id}.png") as answer:
                assert answer.status == 200 and await answer.read() == delivered
        assert list((hosts["web"] / "thumbnails").rglob("*.webp"))

        # 4. Exported from the web's host: the dataset holds the image and its rating.
        export = dreamrate(
            ["export", "dataset", "--out", str(tmp_path / "dataset")],
            host_env | {"DREAMRATE_DATA_DIR": str(hosts["web"])},
            tmp_path / "export.log",
        )
        assert await asyncio.to_thread(export.wait, 120) == 0, (tmp_path / "export.log").read_text()
        dataset = tmp_path / "dataset"
        assert (dataset / "images" / f"{image.id}.png").read_bytes() == delivered
        import pyarrow.parquet as pq

        assert pq.read_table(dataset / "images.parquet").num_rows == 1
        assert pq.read_table(dataset / "ratings.parquet").column("rating").to_pylist() == [7.0]

        # No host kept an image of its own: the store is the only copy.
        for folder in hosts.values():
            assert not (folder / "images").exists(), folder
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
        await stop_bot(bot)
        server.should_exit = True
        await serving
        await engine.dispose()
        await discord.stop()
