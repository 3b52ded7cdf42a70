"""finetune's preference methods refuse bad input in one line, before loading any model, and
write nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamrate.generation.toy_world import render
from dreamrate.toy_community import write_dataset
from tests.cli_helpers import refused
from tests.retraining.conftest import world_scenes


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Four images of one prompt, a choice and flat ratings, as `export dataset` writes them."""
    images = [render(s, 32) for s in world_scenes(4, seed=1)]
    ratings = (np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0]), np.array([5.0, 5.0, 5.0, 5.0]))
    choices = (np.array([0]), np.array([1]), np.array([0]), np.array(["a"]))
    return write_dataset(tmp_path / "dataset", images, ["a shape"], [0] * 4, ratings, choices)


def test_preference_methods_refuse_bad_input_in_one_line(
    cli, dataset: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "lora"
    common = ["finetune", "--data", dataset, "--out", out, "--base", tmp_path / "no-model"]
    # dpo without comparisons: none given, and none in the dataset.
    (dataset / "comparisons.parquet").rename(tmp_path / "choices.parquet")
    refused(cli(*common, "--method", "dpo"), "--method dpo: give --comparisons")
    # comparisons that name images with no file.
    (dataset / "images" / "2.png").unlink()
    refused(
        cli(*common, "--method", "dpo", "--comparisons", tmp_path / "choices.parquet"),
        "--comparisons", "have no file",
    )  # fmt: skip
    # ratings with no liked or no disliked image (every image rated alike).
    refused(cli(*common, "--method", "kto"), "--ratings", "rated image(s) have no file")
    render(world_scenes(1, seed=9)[0], 32).save(dataset / "images" / "2.png")
    refused(cli(*common, "--method", "kto"), "--ratings", "no liked and disliked")
    # options that belong to another method.
    refused(cli(*common, "--method", "sft", "--beta", "10"), "--beta")
    refused(
        cli(*common, "--method", "kto", "--comparisons", tmp_path / "choices.parquet"),
        "--comparisons",
    )
    refused(cli(*common, "--method", "bogus"), "--method", "sft, dpo, kto")
    assert not out.exists()
