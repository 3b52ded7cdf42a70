"""The web home and the bot on one database and one (local) Discord: what a member does on
the web holds on Discord as it would had they done it there."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from dreamrate.db.models import User
from dreamrate.fake_discord import FakeDiscord
from tests.bot.conftest import settled, start_bot, stop_bot
from tests.databases import sqlite_only
from tests.web.conftest import ALICE, Web, client, login, register_accounts, serve


async def _baseline_pending(engine, discord_id: int) -> bool | None:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return await conn.scalar(select(User.baseline_pending).where(User.discord_id == discord_id))


@sqlite_only
async def test_an_opt_in_or_erase_on_the_web_takes_a_new_baseline_on_discord(
    database_url: str, tmp_path: Path, tiny_models
) -> None:  # type: ignore[no-untyped-def]
    """After an opt-in (or an erase) the member's reactions left on Discord must never count:
    the bot's next full pass takes their baseline. From the web as from ``/privacy``: the
    bot notices without a reconnect."""
    discord = FakeDiscord()
    await discord.start()
    register_accounts(discord)
    settings, engine, app, base, task, server = await serve(discord, database_url, tmp_path / "w")
    bot = await start_bot(discord, database_url, tmp_path / "b", tiny_models[0], with_worker=False)
    recorder = bot.bot.reactions  # type: ignore[attr-defined]
    try:
        await settled(bot, backfills=1)  # the pass on connecting is behind us
        passes = recorder.backfills
        web = Web(base, discord, engine, settings, app)
        async with client() as alice:
            csrf = await login(alice, web, ALICE)
            for action in ("optout", "optin"):
                async with alice.post(f"{base}/me/{action}", data={"csrf": csrf}) as r:
                    assert r.status == 200
        assert await _baseline_pending(engine, ALICE.id) is True
        await discord.wait_for(lambda: recorder.backfills > passes, timeout=30)
        await recorder.drained()
        assert await _baseline_pending(engine, ALICE.id) is False
    finally:
        await stop_bot(bot)
        server.should_exit = True
        await task
        await engine.dispose()
        await discord.stop()
