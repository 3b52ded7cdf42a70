"""The three fine-tuning methods move the toy model's renders where their data points, measured
in the pixels of plain diffusers renders; DPO's and KTO's reference stays frozen; a DPO run
resumes to the weights of an uninterrupted one; two processes train what one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from dreamrate.generation.toy_world import render
from dreamrate.retraining.finetune import LORA_FILE, FinetuneError, FinetuneOptions, finetune
from dreamrate.toy_community import write_dataset
from tests.retraining.conftest import nearness, renders, share, world_scenes

pytestmark = pytest.mark.slow

SEEDS = range(100, 124)


def _options(method: str, **changes: object) -> FinetuneOptions:
    base = {"method": method, "steps": 40, "rank": 4, "lr": 2e-3, "resolution": 32,
            "batch_size": 8, "checkpoint_every": 1000}  # fmt: skip
    return FinetuneOptions(**{**base, **changes})  # type: ignore[arg-type]


def _lora_weights(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / LORA_FILE))


def test_sft_on_one_colour_moves_renders_to_that_colour(
    toy_model: Path, fetched, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = fetched("blue", world_scenes(32, seed=1, colour="blue"), "a shape")
    record = finetune(data, str(toy_model), tmp_path / "lora", _options("sft"), show_progress=False)
    assert record["status"] == "done" and record["method"] == "sft" and record["steps_done"] == 40
    before = renders(toy_model, None, "a shape", SEEDS)
    after = renders(toy_model, tmp_path / "lora", "a shape", SEEDS)
    # Calibrated on the suite's toy model: blue-ness 0.62 -> 0.71, blue renders 2 -> 4 of 24.
    assert nearness(after, "blue") >= nearness(before, "blue") + 0.04
    assert share(after, lambda r: r.colour == "blue") >= share(before, lambda r: r.colour == "blue")


def _pairs_dataset(folder: Path, prefer: str) -> Path:
    """Circles of every colour, all captioned "a circle"; every choice prefers ``prefer``."""
    scenes = world_scenes(48, seed=2, shape="circle")
    images = [render(s, 32) for s in scenes]
    preferred = [i for i, s in enumerate(scenes) if s.colour == prefer]
    others = [i for i, s in enumerate(scenes) if s.colour != prefer]
    rng = np.random.default_rng(3)
    a, b, rater, winner = [], [], [], []
    for k in range(120):
        good, bad = int(rng.choice(preferred)), int(rng.choice(others))
        left_is_good = bool(k % 2)
        a.append(good if left_is_good else bad)
        b.append(bad if left_is_good else good)
        rater.append(k % 5)
        winner.append("a" if left_is_good else "b")
    return write_dataset(
        folder, images, ["a circle"], [0] * len(images), None,
        (np.array(a), np.array(b), np.array(rater), np.array(winner)),
    )  # fmt: skip


def _unet_sum(model: Path) -> float:
    from safetensors.numpy import load_file as load

    weights = load(str(model / "unet" / "diffusion_pytorch_model.safetensors"))
    return float(sum(np.abs(v).sum() for v in weights.values()))


def test_dpo_on_choices_for_one_colour_moves_renders_to_it_and_the_reference_stays_frozen(
    toy_model: Path, tmp_path: Path
) -> None:
    data = _pairs_dataset(tmp_path / "dataset", prefer="blue")
    on_disk = _unet_sum(toy_model)
    record = finetune(
        data, str(toy_model), tmp_path / "lora", _options("dpo", beta=500.0), show_progress=False
    )
    assert record["data"]["pairs"] == 120 and record["beta"] == 500.0
    # The reference is the base with the adapter off: its weights never moved.
    assert record["reference_checksum"]["before"] == record["reference_checksum"]["after"]
    assert _unet_sum(toy_model) == on_disk
    assert all("lora" in key for key in _lora_weights(tmp_path / "lora"))
    before = renders(toy_model, None, "a circle", SEEDS)
    after = renders(toy_model, tmp_path / "lora", "a circle", SEEDS)
    # Calibrated on the suite's toy model: blue circles 2 -> 22 of 24.
    blue_before = share(before, lambda r: r.colour == "blue")
    blue_after = share(after, lambda r: r.colour == "blue")
    assert blue_after >= blue_before + 0.3, (blue_before, blue_after)
    assert nearness(after, "blue") > nearness(before, "blue")


def test_kto_on_ratings_that_like_circles_moves_renders_to_circles(
    toy_model: Path, tmp_path: Path
) -> None:
    scenes = world_scenes(24, seed=4, shape="circle") + world_scenes(24, seed=5, shape="square")
    images = [render(s, 32) for s in scenes]
    image, rater, value = [], [], []
    for i, scene in enumerate(scenes):
        for member in range(3):
            image.append(i)
            rater.append(member)
            value.append(9.0 if scene.shape == "circle" else 2.0)
    data = write_dataset(
        tmp_path / "dataset", images, ["a shape"], [0] * len(images),
        (np.array(image), np.array(rater), np.array(value)), None,
    )  # fmt: skip
    record = finetune(
        data, str(toy_model), tmp_path / "lora", _options("kto", beta=500.0), show_progress=False
    )
    assert record["data"]["liked"] == 16 and record["data"]["disliked"] == 16
    before = renders(toy_model, None, "a shape", SEEDS)
    after = renders(toy_model, tmp_path / "lora", "a shape", SEEDS)
    circles_before = share(before, lambda r: r.shape == "circle")
    circles_after = share(after, lambda r: r.shape == "circle")
    # Calibrated on the suite's toy model: circles 8 -> 20 of 24.
    assert circles_after >= circles_before + 0.2, (circles_before, circles_after)


def test_an_interrupted_dpo_run_resumes_to_the_weights_of_an_uninterrupted_one(
    toy_model: Path, tmp_path: Path
) -> None:
    data = _pairs_dataset(tmp_path / "dataset", prefer="blue")
    options = _options("dpo", steps=6, checkpoint_every=2, batch_size=4)
    whole = finetune(data, str(toy_model), tmp_path / "whole", options, show_progress=False)

    def interrupt_after_three(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises, after step 3's update

    with pytest.raises(
        FinetuneError, match="interrupted at step 3 of 6; --resume continues from step 2"
    ):
        finetune(data, str(toy_model), tmp_path / "cut", options, show_progress=False,
                 on_step=interrupt_after_three)  # fmt: skip
    cut = json.loads((tmp_path / "cut" / "train.json").read_text())
    assert cut["status"] == "interrupted" and not (tmp_path / "cut" / LORA_FILE).exists()
    resumed = finetune(
        data, str(toy_model), tmp_path / "cut", options, resume=True, show_progress=False
    )
    assert resumed["resumed"] == [2] and resumed["losses"] == whole["losses"]
    mine, theirs = _lora_weights(tmp_path / "cut"), _lora_weights(tmp_path / "whole")
    assert mine.keys() == theirs.keys() and mine
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key])


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(
    toy_model: Path, fetched, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = fetched("data", world_scenes(16, seed=6), "a shape")
    common = ["--data", str(data), "--base", str(toy_model), "--steps", "4", "--rank", "4",
              "--lr", "0.002", "--resolution", "32", "--batch-size", "4"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DREAMRATE_GENERATION_DEVICE": "cpu"}
    one = subprocess.run(
        [sys.executable, "-m", "dreamrate", "finetune", *common, "--out", str(tmp_path / "one")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "dreamrate", "finetune", *common, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    record = json.loads((tmp_path / "two" / "train.json").read_text())
    assert record["processes"] == 2
    reference = json.loads((tmp_path / "one" / "train.json").read_text())
    np.testing.assert_allclose(record["losses"], reference["losses"], rtol=1e-4)
    mine, theirs = _lora_weights(tmp_path / "two"), _lora_weights(tmp_path / "one")
    assert mine.keys() == theirs.keys()
    # Two processes sum their gradients in another order than one does: float32 rounding
    # leaves differences of a few 1e-6 on weights of about 1e-2 after all the steps (seen:
    # 3.2e-6 once in a run). A wrong global batch shows first in the losses, compared above.
    for key in mine:
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-3, atol=2e-5)
