"""finetune reads img2dataset's webdataset shards as it reads its files layout: the same
samples, captions, scores and pixels, each image read by its place in its shard."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from dreamrate.generation.toy_world import render
from dreamrate.retraining.fetched_images import load_images
from tests.retraining.conftest import world_scenes, write_fetched


def _as_webdataset(files: Path, out: Path, per_shard: int = 5) -> Path:
    out.mkdir()
    keys = sorted(p.stem for p in (files / "00000").glob("*.png"))
    for shard, start in enumerate(range(0, len(keys), per_shard)):
        with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
            for key in keys[start : start + per_shard]:
                for suffix in (".png", ".txt", ".json"):
                    data = (files / "00000" / f"{key}{suffix}").read_bytes()
                    info = tarfile.TarInfo(f"{key}{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return out


def test_webdataset_shards_give_the_samples_of_the_files_layout(tmp_path: Path) -> None:
    scenes = world_scenes(12, seed=3)
    files = write_fetched(tmp_path / "files", scenes, "a shape")
    for i in range(12):  # distinct scores, so the match below is by sample, not by chance
        (files / "00000" / f"{i:09d}.json").write_text(json.dumps({"aesthetic": i / 2}))
    shards = _as_webdataset(files, tmp_path / "shards")
    plain, streamed = load_images(files), load_images(shards)
    assert len(plain) == len(streamed) == 12
    for a, b in zip(plain.samples, streamed.samples, strict=True):
        assert (a.key, a.caption, a.aesthetic) == (b.key, b.caption, b.aesthetic)
    for i in (0, 7, 11):  # from the middle and the end of a shard
        np.testing.assert_array_equal(plain.pixels(i, 32), streamed.pixels(i, 32))
        expected = np.asarray(render(scenes[i], 32), np.float32).transpose(2, 0, 1) / 127.5 - 1
        np.testing.assert_allclose(streamed.pixels(i, 32), expected, atol=1e-6)
