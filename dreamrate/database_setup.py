"""Wiring: from settings to a ready data directory and an up-to-date database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.errors import DatabaseError
from dreamrate.core.paths import ensure_writable_dir
from dreamrate.core.settings import Settings
from dreamrate.db.engine import create_engine, is_sqlite
from dreamrate.db.migrate import MigrationStatus, migration_status, upgrade

__all__ = ["connect_database", "database", "open_database", "safe_url"]

logger = logging.getLogger(__name__)

#: Seconds to wait for a database server before giving up with a clear message.
CONNECT_TIMEOUT_S = 10.0


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


async def connect_database(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create an engine and prove the database answers.

    Raises
    ------
    DatabaseError
        one line with the (password-free) URL and the reason.
    """
    kwargs: dict[str, object] = {"echo": echo}
    if not is_sqlite(url):
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_S}
    else:
        database = make_url(url).database
        if database and database != ":memory:":
            folder = Path(database).parent.resolve()
            ensure_writable_dir(folder, "DREAMRATE_DATABASE_URL", private=True)
    engine = create_engine(url, **kwargs)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 1.5):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except (DBAPIError, SQLAlchemyError, OSError, TimeoutError) as exc:
        await engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DatabaseError(
            f"DREAMRATE_DATABASE_URL: cannot reach {safe_url(url)} ({reason})"
        ) from None
    return engine


async def open_database(settings: Settings, *, migrate: bool = True) -> AsyncEngine:
    """Connect to the configured database and, by default, migrate it to the newest schema.

    Every long-running command starts here, so a database is never used at an
    older schema than the code expects, nor at a newer one.
    """
    # The default database, the web's session key: the data folder is the owner's only.
    ensure_writable_dir(settings.data_dir, "DREAMRATE_DATA_DIR", private=True)
    engine = await connect_database(settings.database_url, echo=settings.database.echo)
    try:
        status: MigrationStatus = await (upgrade(engine) if migrate else migration_status(engine))
    except BaseException:
        await engine.dispose()
        raise
    if not migrate and not status.up_to_date:
        logger.warning(
            "database is at migration %s, the code expects %s; run `dreamrate db upgrade`",
            status.current or "(empty)",
            status.head,
        )
    return engine


@asynccontextmanager
async def database(settings: Settings, **kwargs: Any) -> AsyncIterator[AsyncEngine]:
    """``open_database`` for one command's unit of work; the engine is disposed after."""
    engine = await open_database(settings, **kwargs)
    try:
        yield engine
    finally:
        await engine.dispose()
