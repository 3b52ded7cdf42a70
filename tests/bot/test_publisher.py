"""The publisher's exactly-once rule, called directly: an image has one own message."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamrate.bot.publisher import Publisher
from dreamrate.community.posts import OWN, PostRepository
from dreamrate.ratings.scale import RatingScale
from tests.web.conftest import seed_images

GUILD = 1_000_000_000_000_000_001
SCALE = RatingScale("three", ("1️⃣", "2️⃣", "3️⃣"), (1.0, 2.0, 3.0))


async def test_an_image_recorded_since_the_caller_read_it_is_not_posted_again(
    engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """At start, recovery may find and record a post while delivery holds an older read of
    the image (no message yet): delivery must not post it a second time."""
    (image,) = await seed_images(engine, tmp_path / "images", GUILD, ["posted already"])
    posts = PostRepository(engine)
    recorded = await posts.own_message(image)
    assert recorded == GUILD + 5000  # seed_images posted it

    async def send(nonce: str):  # type: ignore[no-untyped-def]
        pytest.fail("the image was posted a second time")

    publisher = Publisher(None, posts, SCALE, seed=False)  # type: ignore[arg-type]
    assert await publisher.post_once(GUILD + 1, image, OWN, send) == recorded
