"""``dreamrate demo --web``: the demo's data on the web home, logged into with one click."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

from dreamrate.db.engine import create_engine
from dreamrate.db.migrate import upgrade
from dreamrate.demo_web import serve_demo_web
from dreamrate.fake_discord import GUILD_ID
from tests.web.conftest import client, seed_images


async def test_the_demo_serves_its_community_with_a_one_click_login(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = create_engine(f"sqlite+aiosqlite:///{data / 'dreamrate.db'}")
    data.mkdir()
    await upgrade(engine)
    ids = await seed_images(engine, data / "images", GUILD_ID, ["a demo lighthouse"])
    await engine.dispose()
    urls: list[str] = []
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve_demo_web(tmp_path, members=3, port=0, ready=urls.append, stop=stop)
    )
    try:
        while not urls:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
        (login,) = urls
        base = login.removesuffix("/login")
        async with client() as browser:
            async with browser.get(login) as page:
                text = await page.text()
            assert [html.unescape(n) for n in re.findall(r"Authorize as (\w+)", text)] == [
                "moderator", "member0", "member1", "member2",
            ]  # fmt: skip
            # One click: the moderator's button.
            form = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', text.split("</form>")[0]))
            form = {k: html.unescape(v) for k, v in form.items()}
            async with browser.post(str(page.url).split("?")[0], data=form) as home:
                assert home.status == 200 and "dreamers" in await home.text()
            async with browser.get(f"{base}/g/{GUILD_ID}") as gallery:
                assert "a demo lighthouse" in await gallery.text()
            async with browser.get(f"{base}/thumb/{ids[0]}.webp") as thumb:
                assert thumb.status == 200
            async with browser.get(f"{base}/maintainers") as page:
                assert page.status == 200
            async with browser.get(f"{base}/g/{GUILD_ID}/mod") as page:
                assert page.status == 200
    finally:
        stop.set()
        await task
