"""LoRA fine-tuning of a diffusers UNet on fetched images, resumable, with peft.

The objective is the one Stable Diffusion was trained with: encode an image with the VAE,
add noise at a random timestep with the model's own noise schedule (its scheduler config,
as a DDPM training scheduler), and regress the UNet's prediction on the noise (or on the
velocity, for v-prediction models), conditioned on the caption's text-encoder states. Only
the LoRA matrices on the attention projections learn; they are float32 even when the frozen
model runs in float16 (CUDA, with autocast); on the CPU everything is float32.

Every step's batch, noise and timesteps follow from the seed and the step number alone, so
a run resumed from a checkpoint does exactly the steps it had left and ends with the weights
an uninterrupted run would have. The adapter is saved with diffusers' ``save_lora_weights``
and loads with ``load_lora_weights`` anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dreamrate.core.atomic import atomic_file, atomic_folder
from dreamrate.core.errors import DreamrateError
from dreamrate.retraining.fetched_images import TrainingImages, load_images

__all__ = ["LORA_FILE", "FinetuneError", "FinetuneOptions", "finetune"]

logger = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"  #: what diffusers' save_lora_weights writes
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]  #: the attention projections
KEEP_CHECKPOINTS = 2


class FinetuneError(DreamrateError):
    """A fine-tune that cannot start, or was interrupted."""


@dataclass
class FinetuneOptions:
    steps: int = 1000
    rank: int = 8
    lr: float = 1e-4
    resolution: int = 512
    batch_size: int = 4
    seed: int = 0
    checkpoint_every: int = 100
    #: Weigh each image's loss by its aesthetic score (mean weight 1 over the data).
    aesthetic_weighting: bool = False

    def check(self) -> None:
        for name in ("steps", "rank", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise FinetuneError(
                    f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}"
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FinetuneError(f"--lr: must be a positive number, got {self.lr}")
        if self.resolution < 8 or self.resolution % 8:
            raise FinetuneError(f"--resolution: a multiple of 8, got {self.resolution}")

    def same_run(self) -> dict[str, Any]:
        """The options a resumed run must share (``steps`` may grow)."""
        return {k: v for k, v in asdict(self).items() if k not in ("steps", "checkpoint_every")}


def _batch(step: int, size: int, count: int, seed: int) -> list[int]:
    """Sample indices of ``step`` (from 1): epochs of a seeded permutation, back to back."""
    indices = []
    for i in range((step - 1) * size, step * size):
        epoch, position = divmod(i, count)
        order = np.random.default_rng([seed, epoch]).permutation(count)
        indices.append(int(order[position]))
    return indices


def _weights(images: TrainingImages, enabled: bool) -> np.ndarray:
    if not enabled:
        return np.ones(len(images), dtype=np.float32)
    scores = np.array([np.nan if s.aesthetic is None else s.aesthetic for s in images.samples])
    if not np.isfinite(scores).any():
        raise FinetuneError("--aesthetic-weighting: the data has no aesthetic scores")
    scores = np.where(np.isfinite(scores), scores, np.nanmean(scores))
    shifted = scores - scores.min() + max(float(np.ptp(scores)), 1e-6) * 0.1
    return (shifted / shifted.mean()).astype(np.float32)


def _prepare_out(
    out: Path, record: dict[str, Any], *, resume: bool, force: bool
) -> dict[str, Any] | None:
    """The previous run's record when resuming; checks the folder otherwise."""
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out: {out} is a file")
    existing = out / "train.json"
    if resume:
        try:
            previous = json.loads(existing.read_text())
        except (OSError, ValueError):
            raise FinetuneError(f"--resume: {out} holds no fine-tune to resume") from None
        for key in ("base", "options"):
            mine = record[key] if key == "base" else record["options"]["same_run"]
            theirs = (
                previous.get(key) if key == "base" else previous.get("options", {}).get("same_run")
            )
            if mine != theirs:
                raise FinetuneError(
                    f"--resume: {out} was trained with another {key} ({theirs}, not {mine})"
                )
        if previous.get("status") == "done":
            raise FinetuneError(
                f"--resume: {out} finished its run already (--force trains it again)"
            )
        if previous.get("data", {}).get("images") != record["data"]["images"]:
            raise FinetuneError(f"--resume: the data changed since {out} was started")
        return previous
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FinetuneError(
                f"--out: {out} already exists (--resume continues its run, --force starts over)"
            )
        shutil.rmtree(out)
    return None


def _checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    return sorted(folder.glob("step-*"), key=lambda p: int(p.name[5:])) if folder.is_dir() else []


def _save_checkpoint(
    out: Path, step: int, unet: Any, optimizer: Any, losses: list[float], scaler: Any = None
) -> None:
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    target = out / "checkpoints" / f"step-{step:07d}"
    with atomic_folder(target, FinetuneError, overwrite=True) as tmp:
        state = {
            k: v.detach().float().cpu().contiguous()
            for k, v in get_peft_model_state_dict(unet).items()
        }
        save_file(state, str(tmp / "lora.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scaler is not None:  # fp16's loss scale: without it a resumed run skips other steps
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "losses": losses}))
    for old in _checkpoints(out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(
    checkpoint: Path, unet: Any, optimizer: Any, device: Any, scaler: Any = None
) -> tuple[int, list[float]]:
    import torch
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(unet, load_file(str(checkpoint / "lora.safetensors")))
    optimizer.load_state_dict(
        torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True)
    )
    if scaler is not None and (checkpoint / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(checkpoint / "scaler.pt", weights_only=True))
    state = json.loads((checkpoint / "state.json").read_text())
    return int(state["step"]), [float(x) for x in state["losses"]]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_file(path, FinetuneError) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _plot_losses(path: Path, losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="#bbbbbb", linewidth=0.8, label="step")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(
            steps[window - 1 :], smooth, color="#1f6fb4", linewidth=1.6, label=f"mean of {window}"
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("LoRA fine-tune loss")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    with atomic_file(path, FinetuneError) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def finetune(
    data: Path,
    base: str,
    out: Path,
    options: FinetuneOptions,
    *,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``data`` into ``out`` and return its ``train.json`` record."""
    options.check()
    images = load_images(data)
    weights = _weights(images, options.aesthetic_weighting)
    record: dict[str, Any] = {
        "format": "dreamrate-lora",
        "version": 1,
        "base": base,
        "data": images.record(),
        "options": {**asdict(options), "same_run": options.same_run()},
        "lora": {"rank": options.rank, "alpha": options.rank, "target_modules": TARGET_MODULES},
        "status": "running",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    previous = _prepare_out(out, record, resume=resume, force=force)

    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from dreamrate.generation.pipeline import load_text2image

    pipeline = load_text2image(base, device=device, setting="--base")  # type: ignore[arg-type]
    if getattr(pipeline, "text_encoder_2", None) is not None or not hasattr(pipeline, "unet"):
        raise FinetuneError(
            f"--base: {base} is not a Stable Diffusion 1.x/2.x pipeline (one UNet, one text encoder)"
        )
    unet, vae, text_encoder, tokenizer = (
        pipeline.unet,
        pipeline.vae,
        pipeline.text_encoder,
        pipeline.tokenizer,
    )
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    torch.manual_seed(options.seed)  # the adapter's initial weights
    unet.add_adapter(
        LoraConfig(
            r=options.rank,
            lora_alpha=options.rank,
            init_lora_weights="gaussian",
            target_modules=TARGET_MODULES,
        )
    )
    cast_training_params(unet, dtype=torch.float32)  # the adapter learns in float32
    run_device = unet.device
    on_cuda = run_device.type == "cuda"
    frozen_dtype = unet.dtype
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr)
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    prediction = noise_scheduler.config.get("prediction_type", "epsilon")
    record["prediction_type"] = prediction
    scaler = torch.amp.GradScaler("cuda") if on_cuda and frozen_dtype == torch.float16 else None

    out.mkdir(parents=True, exist_ok=True)
    start, losses = 0, []
    if previous is not None:
        checkpoints = _checkpoints(out)
        if checkpoints:
            start, losses = _load_checkpoint(checkpoints[-1], unet, optimizer, run_device, scaler)
        record["started_at"] = previous.get("started_at", record["started_at"])
        record["resumed"] = [*previous.get("resumed", []), start]
        logger.info("resuming %s from step %d", out, start)
    _write_json(out / "train.json", record)

    captions = [s.caption for s in images.samples]
    count = len(images)
    started = time.perf_counter()
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("fine-tuning"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    step = start
    try:
        with progress:
            task = progress.add_task("train", total=options.steps, completed=start, loss="-")
            unet.train()
            for step in range(start + 1, options.steps + 1):
                batch = _batch(step, options.batch_size, count, options.seed)
                generator = torch.Generator(device=run_device).manual_seed(
                    options.seed * 1_000_003 + step
                )
                pixels = torch.from_numpy(
                    np.stack([images.pixels(i, options.resolution) for i in batch])
                )
                with torch.no_grad():
                    pixels = pixels.to(run_device, dtype=vae.dtype)
                    latents = vae.encode(pixels).latent_dist.sample(generator=generator)
                    latents = latents * vae.config.scaling_factor
                    tokens = tokenizer(
                        [captions[i] for i in batch],
                        padding="max_length",
                        max_length=tokenizer.model_max_length,
                        truncation=True,
                        return_tensors="pt",
                    ).input_ids.to(run_device)
                    states = text_encoder(tokens)[0]
                noise = torch.randn(
                    latents.shape, generator=generator, device=run_device, dtype=latents.dtype
                )
                timesteps = torch.randint(
                    0, noise_scheduler.config.num_train_timesteps, (len(batch),),
                    generator=generator, device=run_device,
                )  # fmt: skip
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                target = (
                    noise
                    if prediction == "epsilon"
                    else noise_scheduler.get_velocity(latents, noise, timesteps)
                )
                with torch.autocast(
                    run_device.type,
                    dtype=frozen_dtype,
                    enabled=on_cuda and frozen_dtype != torch.float32,
                ):
                    predicted = unet(noisy, timesteps, states).sample
                per_image = (predicted.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
                weight = torch.from_numpy(weights[batch]).to(run_device)
                loss = (per_image * weight).mean()
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                progress.update(task, completed=step, loss=f"{losses[-1]:.4f}")
                if step % options.checkpoint_every == 0 and step < options.steps:
                    _save_checkpoint(out, step, unet, optimizer, losses, scaler)
    except KeyboardInterrupt:
        record.update(status="interrupted", steps_done=len(losses), losses=losses)
        _write_json(out / "train.json", record)
        last = _checkpoints(out)
        at = int(last[-1].name[5:]) if last else 0
        raise FinetuneError(
            f"interrupted at step {step} of {options.steps}; --resume continues from step {at}"
        ) from None

    _save_lora(pipeline, unet, out)
    _plot_losses(out / "loss.png", losses)
    record.update(
        status="done",
        steps_done=len(losses),
        losses=losses,
        seconds=round(time.perf_counter() - started, 1),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        device=str(run_device),
        dtype=str(frozen_dtype).removeprefix("torch."),
    )
    _write_json(out / "train.json", record)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return record


def _save_lora(pipeline: Any, unet: Any, out: Path) -> None:
    """diffusers' own LoRA file, written beside and moved in whole."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    with atomic_folder(out / ".lora-tmp", FinetuneError, overwrite=True) as tmp:
        type(pipeline).save_lora_weights(
            save_directory=str(tmp), unet_lora_layers=layers, safe_serialization=True
        )
    (out / ".lora-tmp" / LORA_FILE).replace(out / LORA_FILE)
    shutil.rmtree(out / ".lora-tmp", ignore_errors=True)
