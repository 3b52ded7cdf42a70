"""The rating queue, called directly: one rule of what may be shown for rating, one order,
one fallback, for /rate, /compare, the feed and the web home's pages alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamrate.aesthetic.active import ActivePredictor
from dreamrate.community.moderation import set_banned
from dreamrate.community.rating_queue import RatingQueue
from dreamrate.ratings.decisions import ReactionEvent
from dreamrate.ratings.scale import RatingScale
from dreamrate.ratings.service import RatingService
from tests.web.conftest import seed_images

GUILD, OTHER_GUILD = 1_000_000_000_000_000_001, 1_000_000_000_010_000_002
MEMBER, RATER = 4001, 4002
SCALE = RatingScale("three", ("1️⃣", "2️⃣", "3️⃣"), (1.0, 2.0, 3.0))


@pytest.fixture
async def world(engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    ids = await seed_images(engine, tmp_path / "images", GUILD, ["a", "b", "c"])
    other = await seed_images(engine, tmp_path / "images", OTHER_GUILD, ["d"])
    return RatingQueue(engine, ActivePredictor(engine, "none")), ids, other


async def _rate(engine, discord_id: int, guild: int, k: int) -> None:  # type: ignore[no-untyped-def]
    service = RatingService(engine, SCALE)
    await service.record(
        ReactionEvent(
            added=True, discord_user_id=discord_id, message_id=guild + 5000 + k, emoji="2️⃣"
        )
    )


async def test_fewest_rated_first_newest_among_equals_and_never_one_the_member_rated(
    world, engine
) -> None:  # type: ignore[no-untyped-def]
    queue, ids, _ = world
    assert await queue.images_to_rate(3, GUILD) == [ids[2], ids[1], ids[0]]
    await _rate(engine, RATER, GUILD, 2)
    assert await queue.images_to_rate(3, GUILD) == [ids[1], ids[0], ids[2]]
    assert await queue.next_image(GUILD, MEMBER) == ids[1]
    await _rate(engine, MEMBER, GUILD, 1)
    await _rate(engine, MEMBER, GUILD, 0)
    # Only the one they have not rated is left for them, however many ratings it has.
    assert await queue.next_image(GUILD, MEMBER) == ids[2]
    await _rate(engine, MEMBER, GUILD, 2)
    assert await queue.next_image(GUILD, MEMBER) is None


async def test_a_maker_banned_here_has_no_image_shown_for_rating_here(world, engine) -> None:  # type: ignore[no-untyped-def]
    """The web's gallery rule holds for /rate and the feed too: an image by a member banned
    in this server is reposted nowhere there."""
    queue, _, other = world
    maker = 3001 + GUILD % 7  # seed_images' requester
    await set_banned(engine, GUILD, maker, True)
    assert await queue.images_to_rate(3, GUILD) == []
    assert await queue.next_image(GUILD, MEMBER) is None
    assert await queue.pairs_to_compare(3, GUILD) == []
    assert await queue.images_to_rate(3, OTHER_GUILD) == other
