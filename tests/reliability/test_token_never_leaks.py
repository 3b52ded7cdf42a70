"""The bot token never reaches logs, errors, the database or exported data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dreamrate.exports.dataset import export_dataset
from dreamrate.exports.rating_export import export_ratings
from dreamrate.fake_discord import FakeDiscord, Member
from tests.bot.conftest import TOKEN, start_bot, stop_bot
from tests.bot.test_ratings_e2e import dream
from tests.conftest import SECRET_TOKENS

pytest_plugins = ["pytester"]

ADA, BOB = Member(81, "ada"), Member(82, "bob")


def test_the_suite_wide_scan_fails_a_test_that_prints_the_token(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(
        test_leaky=f"""
import logging
def test_prints():
    print("token is {SECRET_TOKENS[0]}")
def test_logs():
    logging.getLogger("dreamrate.bot").warning("connecting with %s", "{SECRET_TOKENS[1]}")
def test_clean():
    print("nothing to see")
"""
    )
    # A separate process (its logs stay out of this test's capture) that does not show
    # what it captured: its report must not itself print the tokens here.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--log-level=INFO", "--show-capture=no"
    )
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*a Discord bot token appeared in 'Captured stdout call'*"])


async def test_token_is_absent_from_database_files_and_exports(
    sqlite_url: str, tmp_path: Path, tiny_models, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    server = FakeDiscord()
    await server.start()
    data = tmp_path / "data"
    running = await start_bot(server, sqlite_url, data, tiny_models[0])
    try:
        with caplog.at_level(logging.DEBUG):
            (message,) = await dream(server, ADA, "a secret-free lighthouse")
            await server.react(BOB, message, "8️⃣")
            await server.drop_connection()  # reconnects log their own lines
            await server.wait_connected()
            await server.react(ADA, message, "6️⃣")
            await server.wait_for(lambda: len(server.reactions[message]) >= 11)
        await export_ratings(running.engine, tmp_path / "exports" / "ratings.jsonl")  # type: ignore[attr-defined]
        await export_dataset(running.engine, data / "images", tmp_path / "exports" / "dataset")  # type: ignore[attr-defined]
    finally:
        await stop_bot(running)
        await server.stop()
    assert TOKEN not in caplog.text
    database = Path(sqlite_url.split("///", 1)[1])
    files = [p for p in [*tmp_path.rglob("*"), database] if p.is_file()]
    assert any(p.suffix == ".db" for p in files) and any(p.suffix == ".jsonl" for p in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path
