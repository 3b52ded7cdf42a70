"""dreamrate finetune on the tiny model: it learns the data's look, resumes exactly, and its
LoRA is plain diffusers.

The look test writes its own tiny model with a VAE trained to keep colours
(``write_tiny_sd(colour_vae=True)``), so the data's look has a latent of its own: the red
images' latent, which the VAE decodes back to red (a random VAE's latents of any image are
all near zero). The look is measured in the latents the UNet produces, not in decoded pixels:
the random UNet cannot denoise, so a generation's latents keep the sampler's starting noise
(std ~15), under which even the data's own latent decodes to grey; what a few dozen steps of
fine-tuning move is the latents' mean.
"""

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


def _pipeline(tiny_sd: Path):  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _latent_means(pipeline, seeds=range(4)) -> np.ndarray:  # type: ignore[no-untyped-def]
    means = []
    for seed in seeds:
        latents = pipeline(
            PROMPT, num_inference_steps=4, guidance_scale=1.0, output_type="latent",
            generator=torch.Generator().manual_seed(seed),
        ).images[0]  # fmt: skip
        means.append(latents.mean(dim=(1, 2)).numpy())
    return np.array(means)


@pytest.fixture(scope="module")
def colour_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a VAE that keeps colours (trained for ~20 s)."""
    from dreamrate.generation.tiny_sd import write_tiny_sd

    return write_tiny_sd(tmp_path_factory.mktemp("colour") / "tiny-sd", colour_vae=True)


def test_a_lora_moves_generations_toward_the_look_of_its_data(
    colour_sd: Path, tmp_path: Path
) -> None:
    data = _red_images(tmp_path / "data")
    out = tmp_path / "lora"
    args = ["finetune", "--data", str(data), "--base", str(colour_sd), "--out", str(out)]
    args += ["--steps", "60", "--rank", "4", "--lr", "0.01", "--resolution", "64"]
    trained = run_cli(*args, "--batch-size", "4", "--aesthetic-weighting", timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "trained 60 steps (sft) on 16 images (cpu, float32, 1 process(es))" in trained.stdout
    record = json.loads((out / "train.json").read_text())
    assert record["status"] == "done" and record["base"] == str(colour_sd)
    assert record["data"]["images"] == 16 and record["options"]["rank"] == 4
    losses = record["losses"]
    assert len(losses) == 60 and np.mean(losses[-10:]) < np.mean(losses[:10])
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "checkpoints").exists()

    base = _pipeline(colour_sd)
    vae = base.vae
    # Where the data's look sits: the VAE's latent of its mean colour, which decodes to red.
    images = [np.asarray(Image.open(p), np.float32) for p in sorted(data.glob("*/*.jpg"))]
    colour = np.mean([i.reshape(-1, 3).mean(0) for i in images], axis=0) / 127.5 - 1
    with torch.no_grad():
        flat = torch.from_numpy(colour.astype(np.float32)).view(1, 3, 1, 1).expand(1, 3, 64, 64)
        latent = vae.encode(flat).latent_dist.mean
        decoded = vae.decode(latent).sample.mean(dim=(0, 2, 3)).numpy()
    assert np.abs(decoded - colour).mean() < 0.2, (decoded, colour)
    target = (latent * vae.config.scaling_factor).mean(dim=(0, 2, 3)).numpy()
    before = _latent_means(base)
    # Plain diffusers: any user loads the adapter the same way.
    adapted = _pipeline(colour_sd)
    adapted.load_lora_weights(str(out))
    after = _latent_means(adapted)
    assert not np.allclose(before, after)  # the LoRA changes the output...
    distance_before = np.linalg.norm(before - target, axis=1).mean()
    distance_after = np.linalg.norm(after - target, axis=1).mean()
    assert distance_after < 0.8 * distance_before, (
        distance_before,
        distance_after,
    )  # ...toward red


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
