"""Alembic migrations run from code: upgrade, current and head revisions, drift check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.core.errors import DatabaseError

__all__ = [
    "MigrationStatus",
    "alembic_config",
    "check_no_drift",
    "check_sqlite_foreign_keys",
    "head_revision",
    "migration_status",
    "revisions",
    "set_sqlite_foreign_keys",
    "upgrade",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at dreamrate's migrations (no ini file needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _script().get_current_head()
    assert head is not None, "no migrations found"
    return head


def revisions() -> list[str]:
    """All revisions, oldest first."""
    return [rev.revision for rev in reversed(list(_script().walk_revisions()))]


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """Where a database stands against this code's migrations."""

    current: str | None  #: revision in the database; None when empty
    head: str  #: newest revision the code knows

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migration_status(engine: AsyncEngine) -> MigrationStatus:
    """Read the database's revision and check that this code knows it.

    Raises
    ------
    DatabaseError
        when the database is at a revision newer than this code (written by a
        newer dreamrate): running would risk corrupting it.
    """
    async with engine.connect() as connection:
        current = await connection.run_sync(_current)
    head = head_revision()
    if current is not None and current not in revisions():
        raise DatabaseError(
            f"the database is at migration {current}, newer than this dreamrate knows "
            f"(latest {head}); upgrade dreamrate"
        )
    return MigrationStatus(current=current, head=head)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> MigrationStatus:
    """Bring the database to ``revision`` (default: the newest), in one transaction per step."""
    before = await migration_status(engine)
    if before.up_to_date and revision == "head":
        return before

    def _upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.connect() as connection:
        with_fks = connection.dialect.name == "sqlite"
        if with_fks:
            await connection.run_sync(set_sqlite_foreign_keys, False)
        try:
            async with connection.begin():
                await connection.run_sync(_upgrade)
                if with_fks:
                    await connection.run_sync(check_sqlite_foreign_keys)
        finally:
            if with_fks:
                await connection.run_sync(set_sqlite_foreign_keys, True)
    after = await migration_status(engine)
    logger.info("database migrated from %s to %s", before.current or "empty", after.current)
    return after


def set_sqlite_foreign_keys(connection: Connection, enabled: bool) -> None:
    """Turn SQLite's foreign-key enforcement on or off for this connection.

    Migrations run with it off: SQLite's batch mode rebuilds a table by copying it and
    dropping the old one, and with foreign keys on, that DROP deletes every row that refers
    to the table (``ON DELETE CASCADE``): rebuilding ``jobs`` would delete every image and
    rating. The pragma is ignored inside a transaction, so it goes to the driver directly,
    before the migration's transaction begins.
    """
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")
    finally:
        cursor.close()


def check_sqlite_foreign_keys(connection: Connection) -> None:
    """Refuse a migration that left a row pointing nowhere (checked before it commits).

    Raises
    ------
    DatabaseError
        naming the first table with a dangling reference.
    """
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
    if broken is not None:
        raise DatabaseError(f"migration left a dangling reference in table {broken[0]}")


async def check_no_drift(engine: AsyncEngine) -> None:
    """Run ``alembic check``: fail if the models differ from what migrations build."""

    def _check(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.check(config)

    async with engine.connect() as connection:
        await connection.run_sync(_check)
