"""The embedding pipeline: decoding a batch ahead on threads gives exactly what one batch at
a time gives, in order, skips unreadable files, and halves a batch that does not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrate.aesthetic.clip_model import load_clip
from dreamrate.aesthetic.embed_pipeline import _forward, iter_embeddings
from tests.conftest import REFERENCE_DIR


@pytest.fixture
def clip(tiny_models: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    return load_clip(f"local-dir:{tiny_models[1]}", None, device="cpu")


@pytest.mark.needs("reference")
def test_read_ahead_matches_one_batch_at_a_time_and_skips_bad_files(clip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = sorted((REFERENCE_DIR / "simulacra-aesthetic-models" / "demo_images").rglob("*.png"))
    assert len(paths) >= 7
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    items = [(k, p) for k, p in enumerate(paths[:7])]
    items.insert(3, (99, broken))
    items.insert(5, (98, tmp_path / "missing.png"))
    steps = list(iter_embeddings(clip, items, batch_size=3, workers=3))
    assert [len(ids) + bad for ids, _, bad in steps] == [3, 3, 3]  # 9 items in batches of 3
    ids = [i for step_ids, _, _ in steps for i in step_ids]
    assert ids == list(range(7)) and sum(bad for _, _, bad in steps) == 2
    vectors = np.concatenate([v for _, v, _ in steps])
    expected = clip.embed_images([Image.open(p) for p in paths[:7]])
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    assert list(iter_embeddings(clip, [], batch_size=3)) == []


def test_a_batch_that_does_not_fit_is_halved(clip) -> None:  # type: ignore[no-untyped-def]
    import torch

    batch = torch.stack(
        [clip.preprocess(Image.new("RGB", (64, 64), (k * 40, 0, 0))) for k in range(5)]
    )
    whole = clip.embed_batch(batch)
    sizes = []
    real = clip.embed_batch

    class Small:  # as a GPU with room for two images would behave
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(clip, name)

        def embed_batch(self, part):  # type: ignore[no-untyped-def]
            sizes.append(len(part))
            if len(part) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return real(part)

    np.testing.assert_allclose(_forward(Small(), batch), whole, rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
    assert sizes == [5, 2, 3, 1, 2]
