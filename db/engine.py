"""The async engine for SQLite (embedded default) and PostgreSQL, with dreamrate's connection settings."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_engine",
    "create_private_sqlite_file",
    "database_down",
    "is_sqlite",
]

logger = logging.getLogger(__name__)

#: How long a SQLite writer waits for the write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create an async engine for ``url`` with dreamrate's connection settings.

    SQLite connections get WAL journalling (readers never block the writer),
    foreign keys on, a busy timeout, and explicit transaction control so that a
    unit of work can ask for ``BEGIN IMMEDIATE`` with
    ``connection.execution_options(sqlite_begin="IMMEDIATE")``: the write lock is
    then taken up front instead of failing on upgrade mid-transaction. A database file
    (and folders) that does not exist yet is created readable by its owner only.
    """
    if is_sqlite(url):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


async def database_down(engine: AsyncEngine) -> str | None:
    """|coro| None when the database answers ``SELECT 1``, else why not, in a few words (the
    error's class only: a driver's message can name the host or the user)."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # whatever the driver raises, the answer is "down"
        return f"the database does not answer ({type(exc).__name__})"
    return None


def create_private_sqlite_file(database: str) -> None:
    """Create the SQLite file ``database`` (and its missing folders) owner-only: the file
    0600 from its first byte (SQLite gives its -wal and -shm files the file's mode), new
    folders 0700. What exists already is left as it is; where this fails, SQLite reports
    the reason when it opens the file."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    missing = []
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        for folder in reversed(missing):
            folder.mkdir(mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # it exists already (the usual case), or SQLite will say why not
        pass


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "do_connect")
    def _before_connect(_dialect: Any, _record: Any, cargs: Any, _cparams: Any) -> None:
        # An empty file is an empty database: SQLite opens it as it would have made it.
        if cargs and isinstance(cargs[0], str) and not _cparams.get("uri"):
            create_private_sqlite_file(cargs[0])

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            raise ValueError(f"sqlite_begin must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")
