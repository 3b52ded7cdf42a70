"""The shareable dataset: pseudonymous, privacy-respecting, complete, atomic."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dreamrate.ratings.dataset_export import DatasetExportError, export_dataset
from tests.aesthetic.community import seed_community


async def test_dataset_leaves_out_private_data_and_pseudonymises(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images_dir = tmp_path / "images"
    community = await seed_community(engine, images_dir, prompts=4, per_prompt=3, raters=5)
    out = tmp_path / "dataset"
    counts = await export_dataset(engine, images_dir, out)
    live = [i for i in community.image_ids if i != community.removed_image]
    assert counts == {
        "generations": 4,
        "images": len(live),
        "ratings": len(live) * 3,
        "raters": 5,
        "embeddings": 0,
    }
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
    assert all(len(r) == 16 and int(r, 16) >= 0 for r in requesters)
    generations = pq.read_table(out / "generations.parquet")
    assert generations.column("prompt").to_pylist()[0] == "a painting number 0"
    assert "Privacy" in (out / "README.md").read_text()
    with pytest.raises(DatasetExportError, match="already exists"):
        await export_dataset(engine, images_dir, out)
    again = await export_dataset(engine, images_dir, out, force=True)
    assert set(pq.read_table(out / "ratings.parquet").column("rater_id").to_pylist()) != raters
    assert again == counts
