"""Images over the upload limit are re-encoded to fit; small ones go as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrate.bot.uploads import fit_for_upload


def test_small_png_is_sent_as_is(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64), "teal").save(path)
    data, name = fit_for_upload(path.read_bytes(), 10_000, "img")
    assert data == path.read_bytes() and name == "img.png"


def test_large_png_is_reencoded_under_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(
        path
    )
    limit = path.stat().st_size // 3
    data, name = fit_for_upload(path.read_bytes(), limit, "img")
    assert len(data) <= limit and name.endswith((".webp", ".jpg"))
    with pytest.raises(ValueError, match="does not fit"):
        fit_for_upload(path.read_bytes(), 1000, "img")
