"""One policy of who counts, used by every reader; one rating schema, from export to training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sqlalchemy import insert, update

from dreamrate.aesthetic.train import train_predictor
from dreamrate.db.models import Embedding, Image
from dreamrate.exports.dataset import export_dataset
from dreamrate.exports.rating_export import EXPORT_COLUMNS, current_ratings, export_ratings
from dreamrate.ratings.schema import RATING_COLUMNS
from dreamrate.ratings.selection import images_needing_ratings
from dreamrate.ratings.stats import rating_stats
from dreamrate.ratings.training_data import load_database_data, load_file_data
from tests.aesthetic.community import GUILD, seed_community

MODEL = "test-space"
DIM = 16


async def _community_with_a_flagged_image(engine, images_dir: Path):  # type: ignore[no-untyped-def]
    community = await seed_community(engine, images_dir, prompts=6, per_prompt=4, raters=5)
    flagged = community.image_ids[1]
    rng = np.random.default_rng(0)
    async with engine.begin() as conn:
        await conn.execute(update(Image).where(Image.id == flagged).values(flagged=True))
        await conn.execute(
            insert(Embedding),
            [
                {
                    "image_id": i,
                    "model": MODEL,
                    "dim": DIM,
                    # Brighter images lie further along the first axis: a learnable taste.
                    "vector": (
                        np.r_[community.brightness[i] / 255, 0.2, rng.normal(0, 0.01, DIM - 2)]
                        .astype(np.float32)
                        .tobytes()
                    ),
                }
                for i in community.image_ids
            ],
        )
    return community, flagged


async def test_every_reader_counts_the_same_members_and_images(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    community, flagged = await _community_with_a_flagged_image(engine, tmp_path / "images")
    private = {str(1000 + 5), str(1000 + 6)}  # the banned and the opted-out member

    exported = await current_ratings(engine)
    assert exported and not {r["rater_id"] for r in exported} & private
    shared = {r["image_id"] for r in exported}
    assert community.removed_image not in shared and flagged not in shared

    data = await load_database_data(engine, embedding_model=MODEL, scale="numbers-10")
    assert not set(data.panel.rater_ids.tolist()) & {
        community.banned_user,
        community.opted_out_user,
    }
    assert community.removed_image not in set(data.panel.image_ids.tolist())

    stats = await rating_stats(engine, 1000, GUILD)
    assert stats.total_ratings == len(data.panel)  # both leave out the same members
    assert stats.raters == 5

    pool = await images_needing_ratings(engine, 100, GUILD)
    assert community.removed_image not in pool and flagged not in pool

    counts = await export_dataset(
        engine, tmp_path / "images", tmp_path / "dataset", embedding_model=MODEL
    )
    assert counts["ratings"] == len(exported)


async def test_the_shareable_dataset_trains_a_predictor(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    community, _ = await _community_with_a_flagged_image(engine, tmp_path / "images")
    out = tmp_path / "dataset"
    counts = await export_dataset(engine, tmp_path / "images", out, embedding_model=MODEL)
    kept = len(community.image_ids) - 2  # the removed and the flagged image
    assert counts["images"] == counts["embeddings"] == kept
    ratings = pq.read_table(out / "ratings.parquet")
    assert tuple(ratings.column_names) == RATING_COLUMNS
    assert len(set(ratings.column("group").to_pylist())) == 6  # one group per prompt

    data = load_file_data(
        out / "ratings.parquet", out / "embeddings.parquet", embedding_model=MODEL, dim=DIM
    )
    result = train_predictor(data, folds=3)
    assert result.summary["images"] == kept and result.summary["prompts"] == 6
    assert result.summary["raters"] == 5
    assert result.metrics["dreamrate"]["spearman"] > 0.5  # brightness is learnable


async def test_ratings_export_is_the_rating_schema_and_reads_back(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    await _community_with_a_flagged_image(engine, tmp_path / "images")
    out = tmp_path / "ratings.parquet"
    written = await export_ratings(engine, out)
    table = pq.read_table(out)
    assert tuple(table.column_names) == EXPORT_COLUMNS
    assert tuple(table.column_names[: len(RATING_COLUMNS)]) == RATING_COLUMNS
    assert table.num_rows == written and table.column("rated_at").null_count == 0
    async with engine.connect() as conn:
        embeddings = [
            (row.image_id, np.frombuffer(row.vector, np.float32))
            for row in await conn.execute(Embedding.__table__.select())
        ]
    import pyarrow as pa

    emb_path = tmp_path / "embeddings.parquet"
    flat = np.concatenate([v for _, v in embeddings])
    pq.write_table(
        pa.table(
            {
                "image_id": [i for i, _ in embeddings],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat), DIM),
            }
        ),
        emb_path,
    )
    data = load_file_data(out, emb_path, embedding_model=MODEL, dim=DIM)
    assert len(data.panel) == written
    # Exported times are whole days (no rater can be followed by the second across
    # exports), so a file carries no evidence of anyone's speed.
    assert all(
        t.hour == t.minute == t.second == t.microsecond == 0
        for t in table.column("rated_at").to_pylist()
    )
    assert data.panel.timestamps is None


def test_rated_at_in_any_unit_and_bad_types_are_one_line(tmp_path: Path) -> None:
    import pyarrow as pa
    import pytest

    from dreamrate.ratings.training_data import TrainingError

    emb = tmp_path / "embeddings.parquet"
    pq.write_table(
        pa.table(
            {
                "image_id": [1, 2],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array([1.0, 0.0, 0.0, 1.0]), 2),
            }
        ),
        emb,
    )
    seconds = [1_700_000_000, 1_700_000_005]
    for unit, scale in (("s", 1), ("ms", 1_000), ("ns", 1_000_000_000)):
        path = tmp_path / f"ratings_{unit}.parquet"
        stamps = pa.array([s * scale for s in seconds], pa.timestamp(unit, tz="UTC"))
        pq.write_table(
            pa.table(
                {
                    "image_id": [1, 2],
                    "rater_id": ["a", "a"],
                    "rating": [3.0, 4.0],
                    "rated_at": stamps,
                }
            ),
            path,
        )
        data = load_file_data(path, emb, embedding_model=MODEL, dim=2)
        assert data.panel.timestamps is not None
        assert data.panel.timestamps.tolist() == [float(s) for s in seconds]
    bad = tmp_path / "ratings_text.parquet"
    pq.write_table(
        pa.table({"image_id": [1], "rater_id": ["a"], "rating": [3.0], "rated_at": ["yesterday"]}),
        bad,
    )
    with pytest.raises(
        TrainingError, match=r"^--ratings: rated_at must be a timestamp, not string$"
    ):
        load_file_data(bad, emb, embedding_model=MODEL, dim=2)
    old = tmp_path / "ratings_old.parquet"
    pq.write_table(pa.table({"image_id": [1], "rater_id": ["a"], "value": [3.0]}), old)
    with pytest.raises(TrainingError, match=r"lacks column\(s\) rating \(`value` is now `rating`"):
        load_file_data(old, emb, embedding_model=MODEL, dim=2)


async def test_maintainer_reads_can_be_limited_to_guilds(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.community.moderation import set_banned

    await _community_with_a_flagged_image(engine, tmp_path / "images")
    every = await current_ratings(engine)
    assert await current_ratings(engine, guilds=[GUILD]) == every
    assert await current_ratings(engine, guilds=[GUILD + 1]) == []
    data = await load_database_data(
        engine, embedding_model=MODEL, scale="numbers-10", guilds=[GUILD + 1]
    )
    assert len(data.panel) == 0 and len(data.image_ids) == 0
    # A ban by this guild's moderators takes the member's ratings of its images out.
    await set_banned(engine, GUILD, 1000, True)
    assert {r["rater_id"] for r in await current_ratings(engine)} == {
        r["rater_id"] for r in every
    } - {"1000"}
    await set_banned(engine, GUILD + 1, 1001, True)  # another guild's ban changes nothing here
    assert "1001" in {r["rater_id"] for r in await current_ratings(engine)}


async def test_what_a_member_requested_before_erasing_never_counts_again(
    engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from dreamrate.community.privacy import erase
    from dreamrate.db.models import Job, User

    await seed_community(engine, tmp_path / "images", prompts=6, per_prompt=2, raters=5)
    async with engine.connect() as conn:
        theirs = set(
            (
                await conn.execute(
                    select(Image.id)
                    .join(Job, Job.id == Image.job_id)
                    .join(User, User.id == Job.requester_id)
                    .where(User.discord_id == 1000)
                )
            ).scalars()
        )
    assert theirs
    await erase(engine, 1000)
    rated = {row["image_id"] for row in await current_ratings(engine)}
    assert rated and rated.isdisjoint(theirs)  # nobody's ratings of their images leave
    assert set(await images_needing_ratings(engine, 50, GUILD)).isdisjoint(theirs)
