"""The web's session key and the SQLite database are their owner's only from the first byte.

A watcher on Python's audit events (every open, chmod, rename and link) looks at the mode of
every file in the folder at each of them, so a moment when a secret sits readable by others
(made 0644, renamed, then made 0600) is seen, without racing a second thread.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from dreamrate.db.engine import create_engine
from dreamrate.web.security import load_secret_key

#: (folder watched, modes seen there: (name, mode)) while a watch is on.
_WATCHING: list[tuple[Path, list[tuple[str, int]]]] = []
_INSIDE = [False]


def _look(event: str, _args: tuple[object, ...]) -> None:
    if not _WATCHING or _INSIDE[0] or not event.startswith(("open", "os.", "sqlite3.")):
        return
    _INSIDE[0] = True  # the look itself raises audit events
    try:
        folder, seen = _WATCHING[-1]
        for found in folder.rglob("*"):
            with_mode = found.lstat()
            if stat.S_ISREG(with_mode.st_mode):
                seen.append((found.name, stat.S_IMODE(with_mode.st_mode)))
    except OSError:
        pass
    finally:
        _INSIDE[0] = False


sys.addaudithook(_look)


@contextmanager
def watching(folder: Path) -> Iterator[list[tuple[str, int]]]:
    """Every (file name, mode) seen under ``folder`` at each file event, the usual umask."""
    seen: list[tuple[str, int]] = []
    old = os.umask(0o022)
    _WATCHING.append((folder, seen))
    try:
        yield seen
    finally:
        _WATCHING.pop()
        os.umask(old)


def test_the_session_key_is_never_readable_by_others(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with watching(data) as seen:
        key = load_secret_key(None, data)
    assert seen, "the watcher saw nothing"
    assert {name for name, _ in seen} >= {"web-secret-key"}
    assert {mode for _, mode in seen} == {0o600}, sorted(set(seen))
    assert (data / "web-secret-key").read_text().strip() == key and len(key) >= 48
    # A second process reads the same key; a second creation leaves the first one alone.
    from dreamrate.core.atomic import create_private_file
    from dreamrate.core.errors import StorageError

    assert load_secret_key(None, data) == key
    assert not create_private_file(data / "web-secret-key", b"other", StorageError)
    assert (data / "web-secret-key").read_text().strip() == key
    assert [p.name for p in data.iterdir()] == ["web-secret-key"]  # no temporary left


def test_a_new_sqlite_database_and_its_folders_are_the_owners_only(tmp_path: Path) -> None:
    async def make(url: str) -> dict[str, int]:
        """Create and use the database; the modes of its files while it is open."""
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (a INTEGER)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
                assert await conn.scalar(text("SELECT count(*) FROM t")) == 1
            folder = Path(url.split("///", 1)[1]).parent
            return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
        finally:
            await engine.dispose()

    # Its folders do not exist yet: made 0700; the file 0600 from its first byte (SQLite's
    # connect saw it so), its WAL files 0600 too.
    folder = tmp_path / "new" / "db"
    with watching(tmp_path) as seen:
        modes = asyncio.run(make(f"sqlite+aiosqlite:///{folder / 'dreamrate.db'}"))
    assert "dreamrate.db" in {name for name, _ in seen}
    assert {mode for _, mode in seen} == {0o600}, sorted(set(seen))
    assert modes == {"dreamrate.db": 0o600, "dreamrate.db-wal": 0o600, "dreamrate.db-shm": 0o600}
    for made in (tmp_path / "new", folder):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    # In a folder that exists, that folder keeps its mode; an existing file too.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    assert (
        asyncio.run(make(f"sqlite+aiosqlite:///{shared / 'dreamrate.db'}"))["dreamrate.db"] == 0o600
    )
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "dreamrate.db").stat().st_mode) == 0o600
    mine = shared / "kept.db"
    mine.touch(mode=0o640)
    os.chmod(mine, 0o640)
    asyncio.run(make(f"sqlite+aiosqlite:///{mine}"))
    assert stat.S_IMODE(mine.stat().st_mode) == 0o640


def test_the_data_folder_the_commands_create_is_the_owners_only(tmp_path: Path) -> None:
    from dreamrate.core.settings import load_settings
    from dreamrate.database_setup import open_database

    settings = load_settings(data_dir=tmp_path / "home" / "data")

    async def open_and_close() -> None:
        engine = await open_database(settings)
        await engine.dispose()

    old = os.umask(0o022)
    try:
        asyncio.run(open_and_close())
    finally:
        os.umask(old)
    for made in (tmp_path / "home", settings.data_dir):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    assert stat.S_IMODE((settings.data_dir / "dreamrate.db").stat().st_mode) == 0o600
