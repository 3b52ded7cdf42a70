"""The web home in a real headless Chromium, beside the real bot on the local Discord.

Members make images with /dream on Discord; in the browser a member logs in through the
local Discord's OAuth page, browses the gallery, rates five images and makes two choices
with the keyboard; a moderator removes an image and bans a member from the web page and
Discord's side sees both; the member erases their data from their page. Screenshots of
each page go to ``build/screenshots/`` for a reviewer (not committed), taken once the page's
images have loaded (the test checks each shows its picture, not a black square).

Without Playwright or Chromium the test is skipped, except where ``CI`` or
``DREAMRATE_REQUIRE_BROWSER=1`` is set: there a missing one fails it.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import func, select

from dreamrate.db.models import Choice, Image, Rating, User
from dreamrate.fake_discord import GUILD_ID, FakeDiscord
from tests.bot.conftest import start_bot, stop_bot
from tests.bot.test_moderation_e2e import reply
from tests.bot.test_ratings_e2e import dream
from tests.test_cli import run_cli
from tests.web.conftest import ALICE, MOD, register_accounts, serve

pytestmark = pytest.mark.slow

playwright_api: ModuleType | None
try:
    playwright_api = importlib.import_module("playwright.async_api")
    MISSING = ""
except ImportError as exc:  # decided in the fixture: a skip, or a failure where required
    playwright_api, MISSING = None, f"Playwright is missing ({exc})"

DIGITS = re.compile(r"^\d+$")
PAIR = re.compile(r"^-\d+$")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> a tricky prompt'


def _required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("DREAMRATE_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="session")  # before the session's tiny models are made: a quick answer
def chromium() -> str:
    if playwright_api is None:
        if _required():
            pytest.fail(f"{MISSING}: pip install playwright (the browser test is required here)")
        pytest.skip(f"{MISSING} (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        if _required():
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip("no chromium here (apt-get install chromium)")
    return CHROMIUM


async def _images_shown(page, selector: str, shot_name: str) -> None:  # type: ignore[no-untyped-def]
    """Every image under ``selector`` has loaded by the page's load event and shows a
    picture in the page's screenshot (saved as ``shot_name``), not the black square of an
    image still missing."""
    from PIL import Image as PILImage

    await page.wait_for_load_state("load")
    states = await page.locator(selector).evaluate_all(
        "images => images.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert states and all(done and width > 0 for _, done, width in states), states
    png = await page.screenshot(path=str(SHOTS / shot_name), full_page=True)
    shot = PILImage.open(io.BytesIO(png)).convert("L")
    for image in await page.locator(selector).all():
        box = await image.bounding_box()
        assert box is not None
        inner = shot.crop(
            (int(box["x"]) + 4, int(box["y"]) + 4,
             int(box["x"] + box["width"]) - 4, int(box["y"] + box["height"]) - 4)
        )  # fmt: skip
        assert inner.getextrema()[1] > 40, f"{await image.get_attribute('src')} is black"


async def _count(engine, table, *where) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)))


async def _log_in(page, base: str, who: str) -> None:  # type: ignore[no-untyped-def]
    await page.goto(base)
    await page.get_by_role("link", name="Log in with Discord").first.click()
    await page.get_by_role("button", name=f"Authorize as {who}").click()
    await page.wait_for_url(f"{base}/")


async def test_members_and_moderators_in_the_browser(
    chromium: str, sqlite_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    assert playwright_api is not None
    expect = playwright_api.expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    discord = FakeDiscord()
    await discord.start()
    register_accounts(discord)
    data_dir = tmp_path / "data"
    bot = await start_bot(discord, sqlite_url, data_dir, tiny_models[0])
    _, engine, _, base, task, server = await serve(discord, sqlite_url, data_dir)
    try:
        messages = await dream(discord, ALICE, "a lighthouse at dusk", images=4)
        messages += await dream(discord, MOD, "a fox in the snow", images=4)
        messages += await dream(discord, ALICE, XSS, images=1)
        async with engine.connect() as conn:
            alice_message = int(
                await conn.scalar(
                    select(Image.discord_message_id).where(Image.discord_message_id == messages[0])
                )
            )
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            member = await browser.new_context(viewport={"width": 1200, "height": 900})
            page = await member.new_page()
            await _log_in(page, base, "alice")
            await page.get_by_role("link", name="dreamers").first.click()
            await page.wait_for_selector(".card")
            assert await page.locator(".card").count() == 9
            # The thumbnails of the first screen load with the page: pictures, not black.
            await _images_shown(page, ".card img", "gallery.png")
            # The prompt with HTML in it is text on the page, and nothing of it ran.
            assert await page.get_by_text("a tricky prompt").count() == 1
            assert await page.evaluate("window.__xss") is None

            # Rate five images with the keyboard.
            await page.goto(f"{base}/g/{GUILD_ID}/rate")
            for k, key in enumerate("73905", start=1):
                await expect(page.locator("#rater")).to_have_attribute("data-image", DIGITS)
                await page.keyboard.press(key)
                await expect(page.locator("#rated-count")).to_have_attribute("data-count", str(k))
            await page.screenshot(path=str(SHOTS / "rate.png"), full_page=True)
            # Two choices with the arrow keys.
            await page.goto(f"{base}/g/{GUILD_ID}/compare")
            for k, key in enumerate(("ArrowLeft", "ArrowRight"), start=1):
                await expect(page.locator("#chooser")).to_have_attribute("data-pair", PAIR)
                await page.keyboard.press(key)
                await expect(page.locator("#chosen-count")).to_have_attribute("data-count", str(k))
            await page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

            async with engine.connect() as conn:
                alice_id = await conn.scalar(select(User.id).where(User.discord_id == ALICE.id))
                ratings = sorted(
                    (await conn.execute(
                        select(Rating.value).where(Rating.user_id == alice_id, Rating.source == "web")
                    )).scalars()
                )  # fmt: skip
            assert ratings == [3.0, 5.0, 7.0, 9.0, 10.0]
            assert await _count(engine, Choice, Choice.user_id == alice_id) == 2
            # Discord's /stats counts them like reactions.
            interaction, _ = await discord.slash(ALICE, "stats")
            stats = (await reply(discord, interaction))["data"]["content"]
            assert stats.startswith("You have rated 5 image(s): 3×1 5×1 7×1 9×1 10×1.")
            # `ratings export` has them, like any reaction.
            out = tmp_path / "ratings.jsonl"
            exported = run_cli(
                "ratings", "export", "--out", str(out),
                env={"DREAMRATE_DATABASE_URL": sqlite_url, "DREAMRATE_DATA_DIR": str(data_dir)},
            )  # fmt: skip
            assert exported.returncode == 0, exported.stderr
            import json

            rows = [json.loads(line) for line in out.read_text().splitlines()]
            assert sorted(r["rating"] for r in rows if r["rater_id"] == str(ALICE.id)) == ratings

            # An image page: the parameters and the rating just given.
            await page.goto(f"{base}/g/{GUILD_ID}")
            await page.locator(".card").first.click()
            await page.wait_for_selector("dl.params")
            await _images_shown(page, "figure.full img", "image.png")
            # The model by its name, never the server's path to it.
            params = await page.locator("dl.params").inner_text()
            assert "tiny-sd" in params and str(tiny_models[0]) not in await page.content()

            # A moderator removes one of alice's images and bans alice, on the web page.
            moderator = await browser.new_context(viewport={"width": 1200, "height": 900})
            mod_page = await moderator.new_page()
            await _log_in(mod_page, base, "moddy")
            await mod_page.goto(f"{base}/g/{GUILD_ID}/mod")
            async with engine.connect() as conn:
                image_id = await conn.scalar(
                    select(Image.id).where(Image.discord_message_id == alice_message)
                )
            await mod_page.locator("#remove-form input[name=image_id]").fill(str(image_id))
            await mod_page.locator("#remove-form button").click()
            await mod_page.wait_for_selector("text=Discord message(s) deleted")
            await mod_page.locator("#ban-form input[name=discord_id]").fill(str(ALICE.id))
            await mod_page.locator("#ban-form button").click()
            await mod_page.wait_for_selector(f"text=Member {ALICE.id} banned here.")
            await mod_page.screenshot(path=str(SHOTS / "moderation.png"), full_page=True)
            assert await mod_page.locator("#audit tr").count() == 3  # header + 2 actions

            # Discord's side: the image's message is gone, and alice may not /dream.
            assert alice_message not in discord.messages
            interaction, _ = await discord.slash(
                ALICE, "dream", [{"name": "prompt", "type": 3, "value": "let me in"}]
            )
            answer = await reply(discord, interaction)
            assert answer["data"]["content"] == (
                "You are banned from generating and rating images here."
            )

            # The ban ended alice's session; she logs in again and erases everything from
            # her page (a confirmation first), which logs her out everywhere.
            await page.goto(f"{base}/me")
            await expect(page.get_by_text("Log in with Discord").first).to_be_visible()
            await _log_in(page, base, "alice")
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.goto(f"{base}/me")
            await page.locator("#erase-form input[name=confirm]").fill("erase")
            await page.locator("#erase-form button").click()
            await page.wait_for_selector("text=Erased 5 rating(s)")
            await page.screenshot(path=str(SHOTS / "privacy.png"), full_page=True)
            await browser.close()
        assert await _count(engine, Rating, Rating.user_id == alice_id) == 0
        assert await _count(engine, Choice, Choice.user_id == alice_id) == 0
    finally:
        server.should_exit = True
        await task
        await engine.dispose()
        await stop_bot(bot)
        await discord.stop()
