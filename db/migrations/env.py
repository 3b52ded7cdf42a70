"""Alembic environment: runs migrations on a connection handed in by ``dreamrate.db.migrate``,
or, from the ``alembic`` command line, on the URL in ``sqlalchemy.url`` /
``DREAMRATE_DATABASE_URL``."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from dreamrate.db.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import set_sqlite_foreign_keys

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:  # see set_sqlite_foreign_keys: batch mode must not cascade
                await connection.run_sync(set_sqlite_foreign_keys, False)
            await connection.run_sync(_run)
            await connection.commit()
            if sqlite:
                await connection.run_sync(set_sqlite_foreign_keys, True)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = os.environ.get("DREAMRATE_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set DREAMRATE_DATABASE_URL (or sqlalchemy.url) to run alembic directly")
    asyncio.run(_run_from_url(url))


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
