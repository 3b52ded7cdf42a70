"""The gallery's cached "best first" order: right, refreshed behind the pages, and bisected
exactly at a cursor."""

from __future__ import annotations

import asyncio

import numpy as np
from sqlalchemy import insert, select

from dreamrate.db.models import Rating, User
from dreamrate.ratings.policy import shown_in_guild
from dreamrate.web.ranking import UNRATED, Ranking, RankingCache
from tests.web.conftest import seed_images

GUILD = 1_000_000_000_000_000_001


def test_a_cursor_continues_just_after_its_entry_ties_included() -> None:
    ranking = Ranking(
        np.array([9, 8, 7, 5, 3, 2]), np.array([9.0, 5.0, 5.0, 5.0, UNRATED, UNRATED]), 0.0
    )
    assert ranking.position_after(9.0, 9) == 1
    assert ranking.position_after(5.0, 8) == 2
    assert ranking.position_after(5.0, 7) == 3
    assert ranking.position_after(5.0, 5) == 4
    assert ranking.position_after(UNRATED, 3) == 5
    assert ranking.position_after(UNRATED, 2) == 6
    assert ranking.position_after(6.0, 1) == 1  # a score between entries


async def _rate(engine, user_id: int, image_id: int, value: float) -> None:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.execute(
            insert(Rating).values(
                user_id=user_id, image_id=image_id, value=value, scale="s", source="reaction"
            )
        )


async def test_the_order_is_refreshed_behind_the_pages(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ids = await seed_images(engine, tmp_path / "images", GUILD, ["a", "b", "c"])
    async with engine.begin() as conn:
        rater = (
            await conn.execute(insert(User).values(discord_id=77, name="r").returning(User.id))
        ).scalar_one()
    await _rate(engine, rater, ids[0], 3.0)
    cache = RankingCache(engine, ttl=0.0)
    shown = shown_in_guild(GUILD)
    first = await cache.get(GUILD, shown)
    assert first.ids.tolist() == [ids[0], ids[2], ids[1]]  # rated first, then newest
    assert first.scores.tolist() == [3.0, UNRATED, UNRATED]
    await _rate(engine, rater, ids[1], 8.0)
    # Old enough: this page still gets the old order at once, and a refresh starts.
    assert (await cache.get(GUILD, shown)) is first
    await asyncio.gather(*cache._refreshing.values())
    fresh = await cache.get(GUILD, shown)
    assert fresh.ids.tolist() == [ids[1], ids[0], ids[2]]
    async with engine.connect() as conn:
        assert await conn.scalar(select(Rating.value).where(Rating.image_id == ids[1])) == 8.0
