"""``dreamrate finetune`` from the command line: the record, the plot and a LoRA plain
diffusers loads; Ctrl-C and --resume end with the weights of an uninterrupted run; bad input is
one line. What each method teaches the model is measured in tests/retraining."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import DREAMRATE, _one_error_line, run_cli

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

PROMPT = "a red picture"


def _red_images(folder: Path, count: int = 16) -> Path:
    """img2dataset's files layout: NNNNN/KEY.jpg with .txt caption and .json score."""
    shard = folder / "00000"
    shard.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        colour = np.clip(np.array([220, 30, 30]) + rng.integers(-20, 20, 3), 0, 255)
        Image.new("RGB", (80, 64), tuple(int(c) for c in colour)).save(shard / f"{i:09d}.jpg")
        (shard / f"{i:09d}.txt").write_text(PROMPT)
        (shard / f"{i:09d}.json").write_text(json.dumps({"url": f"u{i}", "aesthetic": 5 + i / 10}))
    return folder


def test_finetune_writes_its_record_its_plot_and_a_lora_plain_diffusers_loads(
    toy_model: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    data = _red_images(tmp_path / "data")
    out = tmp_path / "lora"
    args = ["finetune", "--data", str(data), "--base", str(toy_model), "--out", str(out)]
    args += ["--steps", "12", "--rank", "4", "--lr", "0.01", "--resolution", "32"]
    trained = run_cli(*args, "--batch-size", "4", "--aesthetic-weighting", timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "trained 12 steps (sft) on 16 images (cpu, float32, 1 process(es))" in trained.stdout
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "done" and record["base"] == str(toy_model)
    assert record["data"]["images"] == 16 and record["options"]["rank"] == 4
    assert record["options"]["aesthetic_weighting"] is True and len(record["losses"]) == 12
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "checkpoints").exists()

    def latents(lora: Path | None) -> np.ndarray:
        pipeline = StableDiffusionPipeline.from_pretrained(str(toy_model), safety_checker=None)
        pipeline.set_progress_bar_config(disable=True)
        if lora is not None:  # plain diffusers: any user loads the adapter the same way
            pipeline.load_lora_weights(str(lora))
        return pipeline(
            PROMPT, num_inference_steps=4, output_type="latent",
            generator=torch.Generator().manual_seed(0),
        ).images[0].numpy()  # fmt: skip

    assert not np.allclose(latents(None), latents(out))


def test_an_interrupted_fine_tune_resumes_to_the_weights_of_an_uninterrupted_one(
    tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    tiny_sd, _ = tiny_models
    data = _red_images(tmp_path / "data", count=6)
    common = ["--data", str(data), "--base", str(tiny_sd), "--steps", "30", "--rank", "2"]
    common += ["--resolution", "32", "--batch-size", "2", "--checkpoint-every", "10"]
    whole = run_cli("finetune", *common, "--out", str(tmp_path / "whole"), timeout=300)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "cut"
    process = subprocess.Popen(
        [str(DREAMRATE), "finetune", *common, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step-0000010").is_dir():  # the first checkpoint
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    last = stderr.strip().splitlines()[-1]  # after the run's own log lines
    assert last.startswith("error: interrupted at step") and "--resume continues from step" in last
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    interrupted = json.loads((out / "train.json").read_text())
    assert interrupted["status"] == "interrupted" and 10 <= interrupted["steps_done"] < 30

    resumed = run_cli("finetune", *common, "--out", str(out), "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((out / "train.json").read_text())
    assert record["steps_done"] == 30 and len(record["losses"]) == 30
    assert record["resumed"] and record["resumed"][0] in (10, 20)
    reference = json.loads((tmp_path / "whole" / "train.json").read_text())
    assert record["losses"] == reference["losses"]  # the same steps, none done twice
    mine = load_file(str(out / "pytorch_lora_weights.safetensors"))
    theirs = load_file(str(tmp_path / "whole" / "pytorch_lora_weights.safetensors"))
    assert mine.keys() == theirs.keys() and len(mine) > 0
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key])
    # A finished run has nothing to resume.
    again = run_cli("finetune", *common, "--out", str(out), "--resume", timeout=300)
    _one_error_line(again, "finished its run already", "--force")


def test_fine_tune_bad_input_is_one_line_and_writes_nothing(
    tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    tiny_sd, _ = tiny_models
    data = _red_images(tmp_path / "data", count=2)
    out = tmp_path / "out"

    def finetune(*extra: str):  # type: ignore[no-untyped-def]
        return run_cli("finetune", "--out", str(out), *extra, timeout=300)

    _one_error_line(
        finetune("--data", str(data), "--base", str(tiny_sd), "--steps", "0"), "--steps"
    )
    (tmp_path / "empty").mkdir()
    _one_error_line(
        finetune("--data", str(tmp_path / "empty"), "--base", str(tiny_sd)), "no images"
    )
    _one_error_line(
        finetune("--data", str(data), "--base", str(tmp_path / "empty")),
        "--base",
        "model_index.json",
    )
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _one_error_line(
        finetune("--data", str(data), "--base", str(tiny_sd), "--steps", "1"), "already exists"
    )
    assert (out / "keep.txt").read_text() == "mine"
    _one_error_line(
        finetune("--data", str(data), "--base", str(tiny_sd), "--resume"), "no fine-tune to resume"
    )
