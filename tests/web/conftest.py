"""The web home served by uvicorn on 127.0.0.1, logging in through the local Discord's OAuth2.

The world: guild A ("dreamers") and guild B ("nightowls") with images made there (real PNG
files in the image store, each with its own Discord message), ALICE in A only, BOB in A
and B, MOD moderating A. Nothing is mocked: the app talks to the fake Discord over HTTP,
to the database over its driver, and members reach the app over HTTP with cookies.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import insert

from dreamrate.db.models import Image, Job, JobStatus, User
from dreamrate.db.types import utcnow
from dreamrate.fake_discord import BASIC, GUILD_B_ID, GUILD_ID, MANAGE_GUILD, FakeDiscord, Member
from dreamrate.generation.store import FolderStore
from tests.bot.conftest import TOKEN

ALICE = Member(2001, "alice")
BOB = Member(2002, "bob")
MOD = Member(2003, "moddy")
#: In no guild the bot is in.
STRANGER = Member(2004, "stranger")


@dataclass
class Web:
    base: str
    discord: FakeDiscord
    engine: Any
    settings: Any
    app: Any
    images: dict[int, list[int]] = field(default_factory=dict)  #: guild -> image ids
    prompts: dict[int, str] = field(default_factory=dict)  #: image id -> prompt


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def register_accounts(discord: FakeDiscord) -> None:
    discord.oauth.add_account(ALICE, [GUILD_ID])
    discord.oauth.add_account(BOB, [GUILD_ID, GUILD_B_ID])
    discord.oauth.add_account(MOD, [GUILD_ID])
    discord.oauth.add_account(STRANGER, [999])
    discord.set_member_permissions(GUILD_ID, MOD, BASIC | MANAGE_GUILD)


async def seed_images(
    engine: Any, images_dir: Path, guild_id: int, prompts: list[str], *, requester: int = 3001
) -> list[int]:
    """One job per prompt, one image each (a distinct flat colour), in ``guild_id``."""
    store = FolderStore(images_dir)
    ids = []
    rng = np.random.default_rng(guild_id % 1000)
    async with engine.begin() as conn:
        user_id = (
            await conn.execute(
                insert(User)
                .values(discord_id=requester + guild_id % 7, name=f"maker{guild_id % 7}")
                .returning(User.id)
            )
        ).scalar_one()
        for k, prompt in enumerate(prompts):
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            sha, path = store.save(PILImage.new("RGB", (64, 64), colour))
            job_id = (
                await conn.execute(
                    insert(Job)
                    .values(
                        requester_id=user_id,
                        guild_id=guild_id,
                        channel_id=guild_id + 1,
                        prompt=prompt,
                        model="tiny-sd",
                        width=64,
                        height=64,
                        steps=2,
                        guidance=0.0,
                        seed=100 + k,
                        num_images=1,
                        status=JobStatus.DONE,
                        finished_at=utcnow(),
                    )
                    .returning(Job.id)
                )
            ).scalar_one()
            image_id = (
                await conn.execute(
                    insert(Image)
                    .values(
                        job_id=job_id,
                        index=0,
                        seed=100 + k,
                        width=64,
                        height=64,
                        sha256=sha,
                        path=path,
                        discord_channel_id=guild_id + 1,
                        discord_message_id=guild_id + 5000 + k,
                    )
                    .returning(Image.id)
                )
            ).scalar_one()
            ids.append(image_id)
    return ids


async def serve(
    discord: FakeDiscord,
    database_url: str,
    data_dir: Path,
    *,
    discord_settings: dict[str, object] | None = None,
    **web: object,
) -> tuple[Any, Any, Any, str, asyncio.Task[None], Any]:
    """The app as ``dreamrate web`` runs it, on a free port."""
    import uvicorn

    from dreamrate.core.settings import load_settings
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade
    from dreamrate.web.app import create_app

    sock = free_socket()
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        data_dir=data_dir,
        database={"url": database_url},
        discord={"api_base": discord.api_base, "token": TOKEN, **(discord_settings or {})},
        web={
            "host": "127.0.0.1",
            "port": port,
            "client_secret": discord.oauth.client_secret,
            **web,
        },
    )
    discord.oauth.redirect_uris.add(f"{base}/callback")
    engine = create_engine(database_url)
    await upgrade(engine)
    app = create_app(settings, engine)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return settings, engine, app, base, task, server


@pytest.fixture
async def web(database_url: str, tmp_path: Path) -> AsyncIterator[Web]:
    discord = FakeDiscord()
    await discord.start()
    register_accounts(discord)
    settings, engine, app, base, task, server = await serve(discord, database_url, tmp_path / "d")
    world = Web(base, discord, engine, settings, app)
    for guild, prompts in (
        (GUILD_ID, [f"a dreamers picture {k}" for k in range(7)]),
        (GUILD_B_ID, ["a nightowls secret"]),
    ):
        ids = await seed_images(engine, settings.images_dir, guild, prompts)
        world.images[guild] = ids
        world.prompts.update(zip(ids, prompts, strict=True))
    try:
        yield world
    finally:
        server.should_exit = True
        await task
        await engine.dispose()
        await discord.stop()


def client() -> aiohttp.ClientSession:
    # Cookies for 127.0.0.1 (an IP) are refused by aiohttp's default jar.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(session: aiohttp.ClientSession, web: Web, member: Member) -> str:
    """Log ``member`` in as a browser would; returns the page's CSRF token."""
    async with session.get(f"{web.base}/login", allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        authorize = response.headers["Location"]
    async with session.get(authorize) as page:
        assert page.status == 200, await page.text()
        html = await page.text()
    form = {
        k: v for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html)
    }
    form = {k: html_lib.unescape(v) for k, v in form.items()} | {"login": str(member.id)}
    async with session.post(authorize.split("?")[0], data=form, allow_redirects=False) as answer:
        assert answer.status == 302
        callback = answer.headers["Location"]
    async with session.get(callback) as home:
        assert home.status == 200, await home.text()
        return csrf_of(await home.text())


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf" content="([^"]*)">', html)
    assert found is not None
    return found.group(1)


async def signed_session(web: Web, session: dict[str, Any]) -> str:
    """A session cookie holding ``session``, signed with the app's key, its login kept in
    the database as a real login's is (so a test can vary the cookie's content alone)."""
    import base64
    import hashlib
    import json
    from datetime import UTC, datetime, timedelta

    from itsdangerous import TimestampSigner

    from dreamrate.db.models import WebSession

    at = datetime.fromtimestamp(float(session["at"]), UTC)
    async with web.engine.begin() as conn:
        await conn.execute(
            insert(WebSession).values(
                id=hashlib.sha256(str(session["sid"]).encode()).hexdigest(),
                discord_id=int(session["uid"]),
                created_at=at,
                expires_at=at + timedelta(hours=web.settings.web.session_hours),
            )
        )
    key = (web.settings.data_dir / "web-secret-key").read_text().strip()
    data = base64.b64encode(json.dumps(session).encode())
    return TimestampSigner(key).sign(data).decode()
