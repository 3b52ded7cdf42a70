"""The shareable dataset: pseudonymous, privacy-respecting, complete, atomic."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import insert, select, update

from dreamrate.community.moderation import dismiss_reports
from dreamrate.db.models import Flag, Image, Job, User
from dreamrate.exports.dataset import DatasetExportError, export_dataset
from dreamrate.exports.rating_export import current_ratings
from tests.aesthetic.community import seed_choices, seed_community


def assert_unlinkable(*groups: set[str]) -> None:
    """Pseudonyms that look like keyed hashes: 16 hex digits, and any two differ in many bits.

    A reversible encoding of the member's id (the id in hex, or the id XOR or plus a key
    drawn per export) gives members 1..8 pseudonyms a few bits apart; the export's HMAC
    gives independent 64-bit values, about 32 bits apart (fewer than 10 once in 10^8 pairs).
    """
    pseudonyms = sorted(set().union(*groups))
    assert len(pseudonyms) == sum(len(group) for group in groups), "a pseudonym is shared"
    assert all(len(p) == 16 and int(p, 16) >= 0 and p == p.lower() for p in pseudonyms)
    for i, a in enumerate(pseudonyms):
        for b in pseudonyms[i + 1 :]:
            differing = bin(int(a, 16) ^ int(b, 16)).count("1")
            assert differing >= 10, f"{a} and {b} differ in {differing} bit(s): not a keyed hash"


async def test_dataset_leaves_out_private_data_and_pseudonymises(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images_dir = tmp_path / "images"
    community = await seed_community(engine, images_dir, prompts=4, per_prompt=3, raters=5)
    await seed_choices(engine, community, choosers=5)
    out = tmp_path / "dataset"
    counts = await export_dataset(engine, images_dir, out)
    live = [i for i in community.image_ids if i != community.removed_image]
    assert counts == {
        "generations": 4,
        "images": len(live),
        "ratings": len(live) * 3,
        # 4 prompts x 3 pairs, less the 2 with the removed image, x 5 members who count
        "comparisons": 10 * 5,
        "raters": 5,
        "embeddings": 0,
    }
    choices = pq.read_table(out / "comparisons.parquet")
    assert choices.column_names == [
        "image_a",
        "image_b",
        "rater_id",
        "winner",
        "group_a",
        "group_b",
        "timestamp",
    ]
    sides = set(choices.column("image_a").to_pylist()) | set(choices.column("image_b").to_pylist())
    assert community.removed_image not in sides and sides <= set(live)
    # Choosers carry the same pseudonyms as raters, and never a Discord id.
    choosers = set(choices.column("rater_id").to_pylist())
    rating_pseudonyms = set(pq.read_table(out / "ratings.parquet").column("rater_id").to_pylist())
    assert choosers == rating_pseudonyms
    assert set(choices.column("winner").to_pylist()) <= {"a", "b", "tie"}
    images = pq.read_table(out / "images.parquet").to_pylist()
    assert sorted(row["image_id"] for row in images) == sorted(live)
    for row in images:
        assert (out / row["file"]).stat().st_size > 0
    ratings = pq.read_table(out / "ratings.parquet")
    # Banned and opted-out members rated every image too: the counts above leave them out.
    raters = set(ratings.column("rater_id").to_pylist())
    assert len(raters) == 5 and all(len(r) == 16 for r in raters)
    discord_ids = {str(i) for i in range(1000, 1008)}
    requesters = set(pq.read_table(out / "generations.parquet").column("requester").to_pylist())
    assert not (raters | requesters) & discord_ids
    generations = pq.read_table(out / "generations.parquet")
    assert generations.column("prompt").to_pylist()[0] == "a painting number 0"
    assert "Privacy" in (out / "README.md").read_text()
    with pytest.raises(DatasetExportError, match="already exists"):
        await export_dataset(engine, images_dir, out)
    again = await export_dataset(engine, images_dir, out, force=True)
    assert again == counts
    # A new export draws new keys: none of its pseudonyms links to the first export's.
    raters_again = set(pq.read_table(out / "ratings.parquet").column("rater_id").to_pylist())
    assert_unlinkable(raters, requesters, raters_again)


async def test_what_leaves_is_clean_flagged_and_reported_images_out_pseudonyms_apart(
    engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    images_dir = tmp_path / "images"
    community = await seed_community(engine, images_dir, prompts=4, per_prompt=3, raters=5)
    flagged, reported, dismissed = community.image_ids[1:4]
    async with engine.begin() as conn:
        await conn.execute(update(Image).where(Image.id == flagged).values(flagged=True))
        reporter = await conn.scalar(select(User.id).where(User.discord_id == 1001))
        for image_id in (reported, dismissed):
            await conn.execute(insert(Flag).values(image_id=image_id, user_id=reporter))
    guild = await conn_guild(engine, dismissed)
    message_id = await conn_message(engine, dismissed)
    assert (await dismiss_reports(engine, guild, message_id=message_id))[1] == 1  # found fine

    out = tmp_path / "dataset"
    await export_dataset(engine, images_dir, out)
    exported = {row["image_id"] for row in pq.read_table(out / "images.parquet").to_pylist()}
    live = set(community.image_ids) - {community.removed_image}
    assert exported == live - {flagged, reported}
    ratings = pq.read_table(out / "ratings.parquet")
    assert {flagged, reported}.isdisjoint(ratings.column("image_id").to_pylist())
    # Every time is a whole day: one rater cannot be followed across exports by the second.
    for table in ("ratings.parquet", "generations.parquet"):
        for column in pq.read_table(out / table).columns:
            if str(column.type).startswith("timestamp"):
                assert all(
                    (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0)
                    for t in column.to_pylist()
                    if t is not None
                )
    # The requester of prompt 0 also rated images: their two pseudonyms differ.
    generations = pq.read_table(out / "generations.parquet").to_pylist()
    requesters = {row["requester"] for row in generations}
    assert requesters
    assert_unlinkable(requesters, set(ratings.column("rater_id").to_pylist()))
    text = (out / "README.md").read_text()
    assert "safety checker" in text and "report" in text and "day" in text

    rows = await current_ratings(engine)
    assert {flagged, reported}.isdisjoint(row["image_id"] for row in rows)
    assert dismissed in {row["image_id"] for row in rows}


async def conn_guild(engine, image_id: int) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(Job.guild_id).join(Image, Image.job_id == Job.id).where(Image.id == image_id)
            )
        )


async def conn_message(engine, image_id: int) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(await conn.scalar(select(Image.discord_message_id).where(Image.id == image_id)))
