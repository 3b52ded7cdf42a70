"""Ratings from reactions on SQLite and PostgreSQL: the rules, the log, backfill, privacy, export."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from sqlalchemy import event, func, insert, select, update

from dreamrate.community.privacy import erase, export_mine, set_opted_out
from dreamrate.core.errors import DreamrateError
from dreamrate.db.engine import create_engine
from dreamrate.db.models import Flag, Image, Job, Rating, RatingEvent, User
from dreamrate.exports.rating_export import EXPORT_COLUMNS, export_ratings
from dreamrate.ratings.decisions import Outcome, ReactionEvent, present_emojis
from dreamrate.ratings.scale import RatingScale
from dreamrate.ratings.service import RatingService

SCALE = RatingScale(
    "numbers-10",
    ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣", "6️⃣", "7️⃣", "8️⃣", "9️⃣", "🔟"),
    tuple(float(v) for v in range(1, 11)),
)
BOT = 999
MESSAGES = (5001, 5002, 5003)


@pytest.fixture
async def service(engine) -> RatingService:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        user_id = (
            await conn.execute(insert(User).values(discord_id=BOT, name="bot").returning(User.id))
        ).scalar_one()
        job_id = (
            await conn.execute(
                insert(Job)
                .values(
                    requester_id=user_id,
                    prompt="p",
                    model="m",
                    width=8,
                    height=8,
                    steps=1,
                    guidance=0,
                    seed=1,
                    num_images=3,
                )
                .returning(Job.id)
            )
        ).scalar_one()
        for index, message in enumerate(MESSAGES):
            await conn.execute(
                insert(Image).values(
                    job_id=job_id,
                    index=index,
                    seed=1,
                    width=8,
                    height=8,
                    sha256="a" * 64,
                    path="p",
                    discord_message_id=message,
                )
            )
    return RatingService(engine, SCALE, bot_user_id=BOT)


def react(user: int, emoji: str, added: bool = True, message: int = MESSAGES[0]) -> ReactionEvent:
    return ReactionEvent(
        added=added, discord_user_id=user, message_id=message, emoji=emoji, user_name=f"u{user}"
    )


async def ratings(engine) -> dict[tuple[int, int], float]:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(User.discord_id, Image.discord_message_id, Rating.value)
            .join(User)
            .join(Image, Image.id == Rating.image_id)
        )
        return {(r[0], r[1]): r[2] for r in rows}


async def events(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(RatingEvent))


async def event_log(engine) -> list:  # type: ignore[no-untyped-def, type-arg]
    """(discord user, message, kind, emoji) of every logged event, in order."""
    async with engine.connect() as conn:
        query = select(
            RatingEvent.discord_user_id, RatingEvent.message_id, RatingEvent.kind, RatingEvent.emoji
        )
        return (await conn.execute(query.order_by(RatingEvent.id))).all()


def replayed(log) -> dict[tuple[int, int], float]:  # type: ignore[no-untyped-def]
    """The ratings the log implies: each member's latest rating emoji still on each message."""
    expected = {}
    for key in {(r[0], r[1]) for r in log}:
        present = present_emojis((r[2], r[3]) for r in log if (r[0], r[1]) == key)
        if present:
            expected[key] = SCALE.value_of(present[-1])
    return expected


def test_present_emojis_replay() -> None:
    from dreamrate.db.models import RatingEventKind as K

    assert present_emojis([(K.ADD, "a"), (K.ADD, "b"), (K.REMOVE, "b")]) == ["a"]
    assert present_emojis([(K.ADD, "a"), (K.ADD, "b"), (K.ADD, "a")]) == ["b", "a"]
    assert present_emojis([(K.BACKFILL_ADD, "a"), (K.BACKFILL_REMOVE, "a")]) == []


def test_scale_accepts_keycaps_without_variation_selector() -> None:
    assert SCALE.value_of("7\u20e3") == 7.0 and SCALE.value_of("🔟") == 10.0
    assert SCALE.value_of("👍") is None and SCALE.value_of("🚩") is None
    assert SCALE.reaction_emojis == (*SCALE.emojis, "🚩")  # what the bot seeds


async def test_most_recent_rating_emoji_wins_and_removal_falls_back(service, engine) -> None:  # type: ignore[no-untyped-def]
    assert await service.record(react(1, "7️⃣")) is Outcome.RATED
    assert await ratings(engine) == {(1, MESSAGES[0]): 7.0}
    assert await service.record(react(1, "9️⃣")) is Outcome.RATED
    assert await ratings(engine) == {(1, MESSAGES[0]): 9.0}
    assert (
        await service.record(react(1, "9️⃣", added=False)) is Outcome.RATED
    )  # back to 7, still on the message
    assert await ratings(engine) == {(1, MESSAGES[0]): 7.0}
    assert await service.record(react(1, "3️⃣")) is Outcome.RATED
    assert await service.record(react(1, "7️⃣", added=False)) is Outcome.UNCHANGED  # 3 is the latest
    assert await ratings(engine) == {(1, MESSAGES[0]): 3.0}
    assert await service.record(react(1, "3️⃣", added=False)) is Outcome.UNRATED
    assert await ratings(engine) == {}
    assert await events(engine) == 6  # every raw event logged


async def test_what_is_ignored(service, engine) -> None:  # type: ignore[no-untyped-def]
    assert await service.record(react(BOT, "5️⃣")) is Outcome.BOT
    assert await service.record(react(1, "👍")) is Outcome.NOT_A_RATING
    assert await service.record(react(1, "5️⃣", message=424242)) is Outcome.NOT_AN_IMAGE
    async with engine.begin() as conn:
        await conn.execute(insert(User).values(discord_id=2, name="banned", banned=True))
        await conn.execute(insert(User).values(discord_id=3, name="quiet", opted_out=True))
        await conn.execute(
            update(Image).where(Image.discord_message_id == MESSAGES[1]).values(removed=True)
        )
    assert await service.record(react(2, "5️⃣")) is Outcome.BANNED
    assert await service.record(react(3, "5️⃣")) is Outcome.OPTED_OUT
    assert await service.record(react(1, "5️⃣", message=MESSAGES[1])) is Outcome.NOT_AN_IMAGE
    assert await ratings(engine) == {} and await events(engine) == 0


async def test_flag_emoji_reports_once(service, engine) -> None:  # type: ignore[no-untyped-def]
    assert await service.record(react(1, "🚩")) is Outcome.FLAGGED
    assert await service.record(react(1, "🚩", added=False)) is Outcome.UNCHANGED
    assert await service.record(react(1, "🚩")) is Outcome.FLAGGED
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Flag)) == 1


async def test_backfill_reconciles_both_ways_idempotently(service, engine) -> None:  # type: ignore[no-untyped-def]
    await service.record(react(1, "3️⃣"))
    await service.record(react(2, "8️⃣"))
    # While the bot was away: 1 changed 3 -> 6, 2 removed theirs, 4 rated 10.
    on_discord = {"6️⃣": [(1, "u1")], "🔟": [(4, "u4")], "3️⃣": [(BOT, "bot")], "👍": [(5, "u5")]}
    assert await service.reconcile(MESSAGES[0], on_discord) == (2, 2)
    assert await ratings(engine) == {(1, MESSAGES[0]): 6.0, (4, MESSAGES[0]): 10.0}
    before = await events(engine)
    assert await service.reconcile(MESSAGES[0], on_discord) == (0, 0)
    assert await events(engine) == before


async def test_concurrent_events_leave_ratings_equal_to_the_log(
    database_url: str, service, engine
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(3)
    emojis = list(SCALE.emojis[:4])
    script = [
        react(rng.randint(1, 4), rng.choice(emojis), rng.random() < 0.7, rng.choice(MESSAGES))
        for _ in range(200)
    ]
    engines = [create_engine(database_url) for _ in range(4)]
    services = [RatingService(e, SCALE, bot_user_id=BOT) for e in engines]
    try:
        await asyncio.gather(*(services[i % 4].record(event) for i, event in enumerate(script)))
    finally:
        for e in engines:
            await e.dispose()
    assert await events(engine) == 200
    log = await event_log(engine)
    expected = replayed(log)
    assert await ratings(engine) == expected


async def test_privacy_and_export(service, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    await service.record(react(1, "7️⃣"))
    await service.record(react(2, "2️⃣"))
    await service.record(react(2, "5️⃣", message=MESSAGES[1]))
    await set_opted_out(engine, 1, True)
    assert await service.record(react(1, "9️⃣")) is Outcome.OPTED_OUT
    await set_opted_out(engine, 1, False)
    mine = await export_mine(engine, 2)
    assert [r["value"] for r in mine["ratings"]] == [2.0, 5.0]
    json.dumps(mine)
    assert (await erase(engine, 2)).ratings == 2
    assert await export_mine(engine, 2) | {"erased_at": None} == {
        **mine,
        "ratings": [],
        "erased_at": None,
    }

    count = await export_ratings(engine, tmp_path / "r.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "r.parquet")
    assert count == 1 and tuple(table.column_names) == EXPORT_COLUMNS
    row = table.to_pylist()[0]
    assert (row["rater_id"], row["message_id"], row["rating"], row["scale"], row["source"]) == (
        "1",
        str(MESSAGES[0]),
        7.0,
        "numbers-10",
        "reaction",
    )
    assert await export_ratings(engine, tmp_path / "r.jsonl") == 1
    line = json.loads((tmp_path / "r.jsonl").read_text())
    assert list(line) == list(EXPORT_COLUMNS) and line["rater_id"] == "1"
    with pytest.raises(DreamrateError, match=r"--out: the file must end in \.parquet or \.jsonl"):
        await export_ratings(engine, tmp_path / "r.csv")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".r", "r"))) == [
        "r.jsonl",
        "r.parquet",
    ]


async def test_batches_equal_one_by_one(service, engine) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(11)
    emojis = [*SCALE.emojis[:3], "👍", "🚩"]
    script = [
        react(
            rng.choice([1, 2, 3, BOT]),
            rng.choice(emojis),
            rng.random() < 0.6,
            rng.choice([*MESSAGES, 4242]),
        )
        for _ in range(300)
    ]
    outcomes = []
    for start in range(0, len(script), 37):
        outcomes += await service.record_many(script[start : start + 37])
    assert (
        Outcome.BOT in outcomes
        and Outcome.NOT_A_RATING in outcomes
        and Outcome.NOT_AN_IMAGE in outcomes
    )
    log = await event_log(engine)
    logged = [
        e
        for e in script
        if e.discord_user_id != BOT and e.message_id != 4242 and SCALE.value_of(e.emoji) is not None
    ]
    assert [(r[0], r[1], r[3]) for r in log] == [
        (e.discord_user_id, e.message_id, e.emoji) for e in logged
    ]
    expected = replayed(log)
    assert await ratings(engine) == expected


async def test_an_image_shown_twice_takes_the_latest_emoji_on_either_message(
    service, engine
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.db.models import ImagePost

    async with engine.begin() as conn:
        image_id = (
            await conn.execute(select(Image.id).where(Image.discord_message_id == MESSAGES[0]))
        ).scalar_one()
        await conn.execute(
            insert(ImagePost).values(message_id=6001, image_id=image_id, channel_id=1, kind="rate")
        )
    await service.record(react(1, "4️⃣", message=6001))
    assert await ratings(engine) == {(1, MESSAGES[0]): 4.0}
    await service.record(react(1, "8️⃣", message=MESSAGES[0]))
    assert await ratings(engine) == {(1, MESSAGES[0]): 8.0}
    await service.record(react(1, "8️⃣", added=False, message=MESSAGES[0]))
    assert await ratings(engine) == {(1, MESSAGES[0]): 4.0}  # still on the repost
    assert await service.reconcile(6001, {}) == (0, 1)  # gone from the repost while we were away
    assert await ratings(engine) == {}


async def _erase_once_it_waits(engine, discord_id: int, database_url: str):  # type: ignore[no-untyped-def]
    """Start erasing ``discord_id``; return the task once the erase is inside its transaction
    while the recording holds its own: on SQLite its ``BEGIN`` has started (traced on a
    connection of its own; ``BEGIN IMMEDIATE`` then waits for the one writer), on PostgreSQL
    it shows a lock wait for its ``FOR UPDATE``."""
    if engine.dialect.name != "postgresql":
        loop, begun = asyncio.get_running_loop(), asyncio.Event()
        own = create_engine(database_url)

        def trace(statement: str) -> None:  # on the driver's thread, as the statement starts
            if statement.startswith("BEGIN"):
                loop.call_soon_threadsafe(begun.set)

        @event.listens_for(own.sync_engine, "connect")
        def _traced(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_connection.run_async(lambda conn: conn.set_trace_callback(trace))

        async def erase_on_its_own_connection():  # type: ignore[no-untyped-def]
            try:
                return await erase(own, discord_id)
            finally:
                await own.dispose()

        erasing = asyncio.create_task(erase_on_its_own_connection())
        await asyncio.wait_for(begun.wait(), 30)
        return erasing
    from tests.conftest import _pg_execute

    erasing = asyncio.create_task(erase(engine, discord_id))
    waiting: list[object] = []
    for _ in range(600):
        waiting = await _pg_execute(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%FOR UPDATE%'"
        )
        if waiting or erasing.done():
            break
        await asyncio.sleep(0.05)
    assert waiting, "the erase never waited for the member's row"
    return erasing


async def test_erase_waits_for_a_rating_being_recorded_and_takes_it_too(
    service, engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A reaction mid-way through recording when the member erases is erased with the rest:
    the erase waits for the recording's transaction (SQLite's one writer; PostgreSQL's lock
    on the member's row, without which READ COMMITTED would let it miss the new rows)."""
    from dreamrate.db.models import ReactionTombstone

    await service.record(react(1, "7️⃣"))  # the member exists
    inside, go_on = asyncio.Event(), asyncio.Event()
    real = RatingService._settle

    async def slow_settle(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        inside.set()
        await go_on.wait()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(RatingService, "_settle", slow_settle)
    recording = asyncio.create_task(service.record(react(1, "3️⃣", message=MESSAGES[1])))
    await asyncio.wait_for(inside.wait(), 30)
    erasing = await _erase_once_it_waits(engine, 1, database_url)
    assert not erasing.done()  # held by the recording's transaction
    go_on.set()
    await recording
    erased = await erasing
    assert erased.ratings == 2 and erased.events == 2
    assert await ratings(engine) == {}
    async with engine.connect() as conn:
        graves = set((await conn.execute(select(ReactionTombstone.message_id))).scalars())
    assert graves == {MESSAGES[0], MESSAGES[1]}


async def test_opting_in_while_in_changes_nothing(service, engine) -> None:  # type: ignore[no-untyped-def]
    await service.record(react(1, "7️⃣"))
    assert await set_opted_out(engine, 1, False) is False  # already in: no new baseline
    assert await service.pending_baselines() == []
    assert await set_opted_out(engine, 1, True) is True
    assert await set_opted_out(engine, 1, False) is True
    assert len(await service.pending_baselines()) == 1
