"""Finding or creating the user row behind a Discord id (or the CLI operator)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dreamrate.db.models import User

__all__ = [
    "CLI_USER_NAME",
    "dialect_insert",
    "ensure_user",
    "user_id_of",
    "user_name",
]

#: The user that jobs enqueued from the command line belong to.
CLI_USER_NAME = "cli"


async def ensure_user(engine: AsyncEngine, discord_id: int | None, name: str) -> User:
    """The user with ``discord_id`` (created if new; name kept current).

    ``discord_id=None`` stands for the command-line operator, one shared row.
    Safe under concurrency: a lost insert race re-reads the winner's row.
    """
    # Read-then-write: on SQLite take the write lock at BEGIN, or a concurrent
    # writer makes the upgrade fail at once with "database is locked".
    sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
        engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False
    )
    for _ in range(2):
        async with sessions() as session:
            query = select(User).where(
                User.discord_id == discord_id
                if discord_id is not None
                else User.discord_id.is_(None),
                *(() if discord_id is not None else (User.name == CLI_USER_NAME,)),
            )
            user = (await session.execute(query.limit(1))).scalar_one_or_none()
            if user is not None:
                if discord_id is not None and name and user.name != name:
                    user.name = name[:100]
                    await session.commit()
                return user
            user = User(
                discord_id=discord_id,
                name=(name if discord_id is not None else CLI_USER_NAME)[:100],
            )
            session.add(user)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                continue
            return user
    raise RuntimeError("could not create user row")  # pragma: no cover - two lost races in a row


def dialect_insert(engine: AsyncEngine):  # type: ignore[no-untyped-def]
    """``insert`` with ``on_conflict_do_*`` for the engine's backend (PostgreSQL or SQLite)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return pg_insert if engine.dialect.name == "postgresql" else sqlite_insert


async def user_name(engine: AsyncEngine, user_id: int) -> str | None:
    """The display name stored for ``user_id``; None for an unknown id."""
    async with engine.connect() as conn:
        return await conn.scalar(select(User.name).where(User.id == user_id))


async def user_id_of(engine: AsyncEngine, discord_id: int) -> int | None:
    """The row id of the member with ``discord_id``; None if they have none (a read only)."""
    async with engine.connect() as conn:
        return await conn.scalar(select(User.id).where(User.discord_id == discord_id))
