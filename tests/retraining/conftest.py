"""Fixtures of the retraining tests: data folders of the toy world, written as ``fetch`` and
``export dataset`` write them, and renders read back from their pixels."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamrate.generation.toy_world import COLOURS, Scene, describe, random_scene, render


def world_scenes(count: int, seed: int, **fixed: str) -> list[Scene]:
    """Random scenes of the toy world with some parts fixed (``colour="red"``, ...)."""
    rng = np.random.default_rng(seed)
    scenes = []
    while len(scenes) < count:
        scene = random_scene(rng)
        values = {**{f: getattr(scene, f) for f in Scene.__dataclass_fields__}, **fixed}
        if values["colour"] == values["background"]:
            continue
        scenes.append(Scene(**values))
    return scenes


def write_fetched(folder: Path, scenes: Sequence[Scene], caption: str) -> Path:
    """img2dataset's files layout: NNNNN/KEY.png with its .txt caption and .json."""
    shard = folder / "00000"
    shard.mkdir(parents=True)
    for i, scene in enumerate(scenes):
        render(scene, 32).save(shard / f"{i:09d}.png")
        (shard / f"{i:09d}.txt").write_text(caption)
        (shard / f"{i:09d}.json").write_text(json.dumps({"url": f"u{i}", "aesthetic": 5.0}))
    return folder


def renders(model: Path, lora: Path | None, prompt: str, seeds: range) -> list[Any]:
    """``prompt`` at each seed, by the model (with ``lora`` loaded, plain diffusers)."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    if lora is not None:
        pipeline.load_lora_weights(str(lora))
    return pipeline(
        [prompt] * len(seeds),
        num_inference_steps=12,
        guidance_scale=4.0,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    ).images


def share(images: Sequence[Any], test: Callable[[Any], bool]) -> float:
    """The share of ``images`` whose reading passes ``test``."""
    return float(np.mean([test(describe(np.asarray(im))) for im in images]))


def nearness(images: Sequence[Any], colour: str) -> float:
    """How near the renders' foregrounds are to the palette's ``colour`` (1: all exactly it)."""
    target = np.array(COLOURS[colour], dtype=np.float32)
    distances = [
        np.linalg.norm(np.array(describe(np.asarray(im)).foreground_rgb) - target) / 255
        for im in images
    ]
    return float(1 - np.mean(distances) / np.sqrt(3))


@pytest.fixture
def fetched(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, scenes: Sequence[Scene], caption: str) -> Path:
        return write_fetched(tmp_path / name, scenes, caption)

    return make
