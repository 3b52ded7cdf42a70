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
    "head_revision",
    "migration_status",
    "revisions",
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

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
    after = await migration_status(engine)
    logger.info("database migrated from %s to %s", before.current or "empty", after.current)
    return after


async def check_no_drift(engine: AsyncEngine) -> None:
    """Run ``alembic check``: fail if the models differ from what migrations build."""

    def _check(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.check(config)

    async with engine.connect() as connection:
        await connection.run_sync(_check)
