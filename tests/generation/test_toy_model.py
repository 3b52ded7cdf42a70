"""The toy model: it follows its captions (read off the pixels of plain diffusers renders),
its training is deterministic, and make-toy refuses what it cannot do in one line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dreamrate.generation.toy_world import COLOURS, describe
from tests.cli_helpers import refused

pytestmark = pytest.mark.slow


def _renders(model: Path, prompts: list[str], seeds: range) -> list[object]:
    import torch

    from dreamrate.generation.pipeline import load_text2image

    pipeline = load_text2image(str(model), device="cpu")
    return pipeline(
        prompt=[p for p in prompts for _ in seeds],
        generator=[torch.Generator().manual_seed(s) for _ in prompts for s in seeds],
        num_inference_steps=20,
        guidance_scale=4.0,
    ).images


def test_the_toy_model_follows_its_captions(toy_model: Path) -> None:
    from dreamrate.generation.model_info import model_defaults

    # It is a model like any other: its size and call defaults come from its folder.
    defaults = model_defaults(str(toy_model))
    assert (defaults.width, defaults.steps, defaults.guidance) == (32, 20, 4.0)
    colours = list(COLOURS)
    seeds = range(6)
    shapes = _renders(toy_model, [f"a {c} circle" for c in colours], seeds)
    said = np.array([c for c in colours for _ in seeds])
    seen = np.array([describe(np.asarray(im)).colour for im in shapes])
    # The dominant foreground colour is the one said in most renders (chance: 1 in 8).
    assert np.mean(seen == said) >= 0.5, list(zip(said, seen, strict=True))
    # And it is not one colour painted everywhere: every colour said is drawn somewhere.
    assert len(set(seen[seen == said])) >= 6


def test_make_toy_trains_deterministically(tmp_path: Path) -> None:
    from dreamrate.generation.toy_model import TOY_PRESETS, train_toy_model

    tiny = replace(
        TOY_PRESETS["small"], scenes=64, vae_steps=3, unet_steps=3, vae_batch=4, unet_batch=8
    )
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        train_toy_model(tmp_path / name, seed=3, config=tiny, show_progress=False)
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"):  # fmt: skip
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes(), part


def test_make_toy_refuses_in_one_line_and_writes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    refused(cli("models", "make-toy", mine), "not empty", "--force")
    assert (mine / "keep.txt").read_text() == "mine"
    refused(cli("models", "make-toy", tmp_path / "new", "--preset", "huge"), "--preset", "full")
    refused(cli("models", "make-toy", tmp_path / "new", "--seed", "-1"), "--seed")
    (tmp_path / "file").write_text("x")
    refused(cli("models", "make-toy", tmp_path / "file" / "toy"), "is a file")
