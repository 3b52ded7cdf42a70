"""The schema's guarantees, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from dreamrate.db.models import Image, Job, JobStatus, Rating, RatingEvent, RatingEventKind, User

MAX_SNOWFLAKE = 2**63 - 1


async def _job(session, user: User) -> Job:  # type: ignore[no-untyped-def]
    job = Job(
        requester_id=user.id,
        prompt="a lighthouse at dusk, ünïcode ✓",
        model="stabilityai/sd-turbo",
        width=512,
        height=512,
        steps=1,
        guidance=0.0,
        seed=2**32 - 1,
        guild_id=MAX_SNOWFLAKE,
    )
    session.add(job)
    await session.flush()
    return job


async def test_round_trip_keeps_types(engine) -> None:  # type: ignore[no-untyped-def]
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        user = User(discord_id=MAX_SNOWFLAKE, name="ada")
        session.add(user)
        await session.flush()
        job = await _job(session, user)
        image = Image(
            job_id=job.id,
            index=0,
            seed=job.seed,
            width=512,
            height=512,
            sha256="a" * 64,
            path="images/aa/x.png",
        )
        session.add(image)
        await session.flush()
        session.add(
            Rating(
                user_id=user.id, image_id=image.id, value=7.0, scale="numbers-10", source="reaction"
            )
        )
        session.add(
            RatingEvent(
                kind=RatingEventKind.ADD,
                discord_user_id=MAX_SNOWFLAKE,
                user_id=user.id,
                image_id=image.id,
                emoji="7️⃣",
                value=7.0,
                scale="numbers-10",
            )
        )
    async with sessions() as session:
        job = (await session.execute(select(Job))).scalar_one()
        assert job.status is JobStatus.QUEUED
        assert job.guild_id == MAX_SNOWFLAKE and job.seed == 2**32 - 1
        assert job.prompt == "a lighthouse at dusk, ünïcode ✓"
        assert job.created_at.tzinfo is not None
        assert abs(job.created_at - datetime.now(UTC)) < timedelta(minutes=1)
        user = (await session.execute(select(User))).scalar_one()
        assert user.discord_id == MAX_SNOWFLAKE and not user.banned and not user.opted_out
        event = (await session.execute(select(RatingEvent))).scalar_one()
        assert event.kind is RatingEventKind.ADD and event.emoji == "7️⃣"


async def test_one_current_rating_per_user_and_image(engine) -> None:  # type: ignore[no-untyped-def]
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        user = User(discord_id=1, name="a")
        session.add(user)
        await session.flush()
        job = await _job(session, user)
        image = Image(job_id=job.id, index=0, seed=1, width=8, height=8, sha256="b" * 64, path="p")
        session.add(image)
        await session.flush()
        session.add(
            Rating(
                user_id=user.id, image_id=image.id, value=3, scale="numbers-10", source="reaction"
            )
        )
        ids = (user.id, image.id, job.id)
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(
                Rating(
                    user_id=ids[0], image_id=ids[1], value=9, scale="numbers-10", source="reaction"
                )
            )
    # A late worker completing the same job again cannot add a second image 0.
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(
                Image(job_id=ids[2], index=0, seed=1, width=8, height=8, sha256="c" * 64, path="q")
            )


async def test_foreign_keys_and_checks_are_enforced(engine) -> None:  # type: ignore[no-untyped-def]
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            session.add(
                Rating(user_id=424242, image_id=434343, value=1, scale="s", source="reaction")
            )
    with pytest.raises(IntegrityError):
        async with sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO jobs (requester_id, prompt, model, width, height, steps, guidance, scheduler, "
                    "num_images, seed, status, priority, attempts, progress, cancel_requested, created_at, updated_at) "
                    "VALUES (1, 'p', 'm', 8, 8, 1, 0, 'default', 1, 1, 'exploded', 0, 0, 0, false, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
    with pytest.raises(IntegrityError):  # 'import' was a kind nothing ever logged (0003)
        async with sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO rating_events (kind, emoji, received_at) "
                    "VALUES ('import', 'x', CURRENT_TIMESTAMP)"
                )
            )


async def test_sqlite_connection_settings(sqlite_url: str) -> None:
    from dreamrate.db.engine import SQLITE_BUSY_TIMEOUT_MS, create_engine

    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (
                await conn.exec_driver_sql("PRAGMA busy_timeout")
            ).scalar() == SQLITE_BUSY_TIMEOUT_MS
        # BEGIN IMMEDIATE takes the write lock up front; a plain BEGIN does not.
        path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            for mode, locks in (("DEFERRED", False), ("IMMEDIATE", True)):
                async with engine.connect() as conn:
                    conn = await conn.execution_options(sqlite_begin=mode)
                    async with conn.begin():
                        await conn.exec_driver_sql("SELECT 1")
                        if locks:
                            with pytest.raises(sqlite3.OperationalError, match="locked"):
                                other.execute("BEGIN IMMEDIATE")
                        else:
                            other.execute("BEGIN IMMEDIATE")
                            other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        await engine.dispose()
