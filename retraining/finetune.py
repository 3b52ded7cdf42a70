"""LoRA fine-tuning of a diffusers UNet, by imitation or from the community's clicks, resumable,
data-parallel under Hugging Face ``accelerate``.

Three methods share one loop (:mod:`.objectives` has the losses):

* ``sft`` learns from fetched images and their captions (``dreamrate fetch``): Stable
  Diffusion's own objective, regressing the noise (or velocity) added at a random timestep;
* ``dpo`` learns from choices between two images of one prompt (Diffusion-DPO);
* ``kto`` learns from ratings, as liked and disliked images (Diffusion-KTO).

``dpo`` and ``kto`` read a dataset export (``export dataset``), whose images come with their
prompts; their reference is the base model itself, the LoRA switched off, so it stays frozen.

Only the LoRA matrices on the attention projections learn, in float32; on CUDA the frozen
model runs in bfloat16 (float16 where the GPU lacks it) under autocast, as diffusers' own
LoRA scripts do. Every step's batch, noise and timesteps follow from the seed and the step
alone, so a run resumed from a checkpoint ends with the weights an uninterrupted run would
have, and under ``accelerate launch`` (or ``torchrun``) each of N processes takes its
1/N of the same global batch: the same weights as one process, within float rounding.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dreamrate.core.atomic import atomic_file, atomic_folder
from dreamrate.core.errors import DreamrateError
from dreamrate.retraining.objectives import (
    DEFAULT_BETA,
    METHODS,
    dpo_loss,
    kto_loss,
    per_image_error,
    sft_loss,
)
from dreamrate.retraining.sources import TrainingSource, open_source

__all__ = ["LORA_FILE", "FinetuneError", "FinetuneOptions", "finetune"]

logger = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"  #: what diffusers' save_lora_weights writes
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]  #: the attention projections
KEEP_CHECKPOINTS = 2
Method = Literal["sft", "dpo", "kto"]


class FinetuneError(DreamrateError):
    """A fine-tune that cannot start, or was interrupted."""


@dataclass
class FinetuneOptions:
    """What a fine-tune does; ``same_run`` lists what a resumed run must share."""

    method: Method = "sft"
    steps: int = 1000
    rank: int = 8
    lr: float = 1e-4
    resolution: int = 512
    #: Samples per optimiser step over all processes: images (sft, kto) or pairs (dpo).
    batch_size: int = 4
    seed: int = 0
    checkpoint_every: int = 100
    #: Weigh each image's loss by its aesthetic score (sft; mean weight 1 over the data).
    aesthetic_weighting: bool = False
    #: Strength of the pull towards the reference (dpo, kto; default per method).
    beta: float | None = None
    #: Recompute activations in the backward pass (less GPU memory, ~20 % slower).
    gradient_checkpointing: bool = False

    def check(self) -> None:
        if self.method not in METHODS:
            raise FinetuneError(f"--method: one of {', '.join(METHODS)}, not {self.method!r}")
        for name in ("steps", "rank", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise FinetuneError(
                    f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}"
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FinetuneError(f"--lr: must be a positive number, got {self.lr}")
        if self.resolution < 8 or self.resolution % 8:
            raise FinetuneError(f"--resolution: a multiple of 8, got {self.resolution}")
        if self.beta is not None and not (math.isfinite(self.beta) and self.beta > 0):
            raise FinetuneError(f"--beta: must be a positive number, got {self.beta}")
        if self.beta is not None and self.method == "sft":
            raise FinetuneError("--beta: only --method dpo or kto has a reference to stay near")
        if self.aesthetic_weighting and self.method != "sft":
            raise FinetuneError("--aesthetic-weighting: only for --method sft")
        if self.method == "kto" and self.batch_size < 2:
            raise FinetuneError("--batch-size: kto needs at least 2 (liked and disliked images)")

    @property
    def strength(self) -> float | None:
        return None if self.method == "sft" else (self.beta or DEFAULT_BETA[self.method])

    def same_run(self) -> dict[str, Any]:
        """The options a resumed run must share (``steps`` may grow)."""
        return {k: v for k, v in asdict(self).items() if k not in ("steps", "checkpoint_every")}


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
        except (OSError, ValueError) as exc:
            raise FinetuneError(f"--resume: {out} holds no fine-tune to resume") from exc
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
        if previous.get("data") != record["data"]:
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


def _plot_losses(path: Path, losses: list[float], method: str) -> None:
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
    ax.set_title(f"LoRA fine-tune loss ({method})")
    ax.legend(loc="upper right", frameon=False)
    fig.tight_layout()
    with atomic_file(path, FinetuneError) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _accelerator(device: str) -> Any:
    """One accelerator per run: the device, the processes and the precision.

    ``device`` is the generation device setting; under ``accelerate launch``/``torchrun``
    each process gets its own GPU (or CPU, over gloo)."""
    import torch
    from accelerate import Accelerator

    from dreamrate.core.devices import pick_device

    try:
        chosen = pick_device(device)  # type: ignore[arg-type]
    except ValueError as exc:
        raise FinetuneError(f"DREAMRATE_GENERATION_DEVICE: {exc}") from exc
    on_cuda = chosen == "cuda"
    precision = "no"
    if on_cuda:
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Accelerator(cpu=chosen == "cpu", mixed_precision=precision)


@dataclass
class _Model:
    """The frozen parts and the UNet with its adapter, on the run's device."""

    pipeline: Any
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    prediction: str


def _load(base: str, options: FinetuneOptions, accelerator: Any) -> _Model:
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from dreamrate.generation.pipeline import load_text2image

    pipeline = load_text2image(base, device="cpu", setting="--base")
    if getattr(pipeline, "text_encoder_2", None) is not None or not hasattr(pipeline, "unet"):
        raise FinetuneError(
            f"--base: {base} is not a Stable Diffusion 1.x/2.x pipeline (one UNet, one text encoder)"
        )
    weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        accelerator.mixed_precision, torch.float32
    )
    unet, vae, text_encoder = pipeline.unet, pipeline.vae, pipeline.text_encoder
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        module.to(accelerator.device, dtype=weight_dtype)
    torch.manual_seed(options.seed)  # the adapter's initial weights, equal in every process
    unet.add_adapter(
        LoraConfig(
            r=options.rank,
            lora_alpha=options.rank,
            init_lora_weights="gaussian",
            target_modules=TARGET_MODULES,
        )
    )
    cast_training_params(unet, dtype=torch.float32)  # the adapter learns in float32
    if options.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if accelerator.device.type == "cuda":
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())  # PyTorch's fused SDPA attention
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    return _Model(
        pipeline=pipeline,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=pipeline.tokenizer,
        noise_scheduler=noise_scheduler,
        prediction=noise_scheduler.config.get("prediction_type", "epsilon"),
    )


@dataclass
class _Batch:
    """One process's share of a step: pixels (pairs as winners then losers), captions and
    per-sample extras, plus the step's noise and timesteps for those samples."""

    pixels: np.ndarray
    captions: list[str]
    extra: np.ndarray | None


def _share(indices: list[int], rank: int, world: int) -> list[int]:
    per = len(indices) // world
    return indices[rank * per : (rank + 1) * per]


def _read_batch(
    source: TrainingSource, step: int, options: FinetuneOptions, rank: int, world: int
) -> _Batch:
    indices = _share(source.indices(step, options.batch_size, options.seed), rank, world)
    return _Batch(
        pixels=source.pixels(indices, options.resolution),
        captions=source.captions(indices),
        extra=source.extra(indices),
    )


def _step_noise(
    model: _Model,
    step: int,
    options: FinetuneOptions,
    shape: tuple[int, ...],
    rank: int,
    world: int,
) -> tuple[Any, Any, Any]:
    """The whole step's generator draws, then this process's share of them: a sample's noise,
    timestep and VAE sample do not depend on how many processes split the batch.

    Returns ``(noise, timesteps, vae_sample)``; for pairs the VAE sample holds this process's
    winners, then its losers."""
    import torch

    generator = torch.Generator().manual_seed(options.seed * 1_000_003 + step)
    total = options.batch_size
    noise = torch.randn((total, *shape), generator=generator)
    timesteps = torch.randint(
        0, model.noise_scheduler.config.num_train_timesteps, (total,), generator=generator
    )
    images = 2 if options.method == "dpo" else 1  # a pair's two images
    vae_sample = torch.randn((images, total, *shape), generator=generator)
    per = total // world
    mine = slice(rank * per, (rank + 1) * per)
    return noise[mine], timesteps[mine], vae_sample[:, mine].reshape(images * per, *shape)


def _encode(model: _Model, batch: _Batch, vae_sample: Any, device: Any) -> tuple[Any, Any]:
    import torch

    with torch.no_grad():
        pixels = torch.from_numpy(batch.pixels).to(device, dtype=model.vae.dtype)
        posterior = model.vae.encode(pixels).latent_dist
        sample = vae_sample.to(device, posterior.mean.dtype)
        latents = (posterior.mean + posterior.std * sample) * model.vae.config.scaling_factor
        tokens = model.tokenizer(
            batch.captions,
            padding="max_length",
            max_length=model.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        states = model.text_encoder(tokens)[0]
    return latents.float(), states


def _loss(
    model: _Model,
    unet: Any,
    base_unet: Any,
    options: FinetuneOptions,
    batch: _Batch,
    latents: Any,
    states: Any,
    noise: Any,
    timesteps: Any,
    accelerator: Any,
) -> tuple[Any, dict[str, float]]:
    import torch

    device = accelerator.device
    pairs = options.method == "dpo"
    if pairs:  # winners and losers share the prompt, the noise and the timestep
        noise, timesteps, states = (
            noise.repeat(2, 1, 1, 1),
            timesteps.repeat(2),
            states.repeat(2, 1, 1),
        )
    noise, timesteps = noise.to(device), timesteps.to(device)
    noisy = model.noise_scheduler.add_noise(latents, noise, timesteps).to(states.dtype)
    target = (
        noise
        if model.prediction == "epsilon"
        else model.noise_scheduler.get_velocity(latents, noise, timesteps)
    )
    reference = None
    if options.method != "sft":  # the base model, adapter off: frozen by construction
        base_unet.disable_adapters()
        try:
            with torch.no_grad(), accelerator.autocast():
                reference = per_image_error(base_unet(noisy, timesteps, states).sample, target)
        finally:
            base_unet.enable_adapters()
    with accelerator.autocast():
        error = per_image_error(unet(noisy, timesteps, states).sample, target)
    if options.method == "sft":
        weight = None if batch.extra is None else torch.from_numpy(batch.extra).to(device)
        return sft_loss(error, weight), {}
    beta = float(options.strength or 0.0)
    assert reference is not None
    if pairs:
        half = len(error) // 2
        return dpo_loss(error[:half], error[half:], reference[:half], reference[half:], beta)
    liked = torch.from_numpy(np.asarray(batch.extra, dtype=bool)).to(device)
    return kto_loss(error, reference, liked, beta)


def finetune(
    data: Path,
    base: str,
    out: Path,
    options: FinetuneOptions,
    *,
    comparisons: Path | None = None,
    ratings: Path | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    show_progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``data`` into ``out`` and return its ``train.json`` record.

    Parameters
    ----------
    data
        ``sft``: fetched images (``dreamrate fetch --out``); ``dpo``/``kto``: a dataset
        export (``dreamrate export dataset --out``) holding the images and their prompts.
    comparisons, ratings
        The choices (``dpo``) or ratings (``kto``) to learn from; default: the dataset's own
        ``comparisons.parquet`` / ``ratings.parquet``.
    on_step
        Called with each finished step's number (after its checkpoint), e.g. to report
        progress elsewhere; a ``KeyboardInterrupt`` it raises stops the run as Ctrl-C does.

    Raises
    ------
    FinetuneError, DataError, PreferenceDataError
        one line saying what is wrong with the input; nothing is written then.
    """
    options.check()
    source = open_source(options.method, data, comparisons=comparisons, ratings=ratings)
    weights_on = options.aesthetic_weighting
    if weights_on:
        source.enable_weights()
    record: dict[str, Any] = {
        "format": "dreamrate-lora",
        "version": 2,
        "method": options.method,
        "base": base,
        "data": source.record(),
        "options": {**asdict(options), "same_run": options.same_run()},
        "lora": {"rank": options.rank, "alpha": options.rank, "target_modules": TARGET_MODULES},
        "status": "running",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if options.strength is not None:
        record["beta"] = options.strength
    previous = _prepare_out(out, record, resume=resume, force=force)

    import torch

    accelerator = _accelerator(device)
    rank, world = accelerator.process_index, accelerator.num_processes
    if options.batch_size % world:
        raise FinetuneError(
            f"--batch-size: {options.batch_size} does not split over {world} processes"
        )
    main = accelerator.is_main_process
    model = _load(base, options, accelerator)
    params = [p for p in model.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr)
    unet, optimizer = accelerator.prepare(model.unet, optimizer)
    base_unet = accelerator.unwrap_model(unet)
    scaler = accelerator.scaler
    record["prediction_type"] = model.prediction
    frozen_before = _frozen_checksum(base_unet)

    start, losses = 0, []
    if previous is not None:
        checkpoints = _checkpoints(out)
        if checkpoints:
            start, losses = _load_checkpoint(
                checkpoints[-1], base_unet, optimizer, accelerator.device, scaler
            )
        record["started_at"] = previous.get("started_at", record["started_at"])
        record["resumed"] = [*previous.get("resumed", []), start]
        logger.info("resuming %s from step %d", out, start)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "train.json", record)

    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(f"fine-tuning ({options.method})"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not (show_progress and main),
    )
    latent_shape = (
        model.unet.config.in_channels,
        options.resolution // model.pipeline.vae_scale_factor,
        options.resolution // model.pipeline.vae_scale_factor,
    )
    step_seconds: list[float] = []
    started = time.perf_counter()
    step = start
    # The next batch is decoded on a thread while this one trains (image decoding releases
    # the GIL), so reading data costs the loop next to nothing.
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dreamrate-finetune-data")
    upcoming: Future[_Batch] | None = None
    try:
        with progress:
            task = progress.add_task(
                "train", total=options.steps, completed=start, loss="-", rate=""
            )
            unet.train()
            for step in range(start + 1, options.steps + 1):
                tick = time.perf_counter()
                batch = (
                    upcoming.result()
                    if upcoming is not None
                    else _read_batch(source, step, options, rank, world)
                )
                if step < options.steps:
                    upcoming = reader.submit(_read_batch, source, step + 1, options, rank, world)
                noise, timesteps, vae_sample = _step_noise(
                    model, step, options, latent_shape, rank, world
                )
                latents, states = _encode(model, batch, vae_sample, accelerator.device)
                loss, stats = _loss(
                    model, unet, base_unet, options, batch, latents, states, noise, timesteps,
                    accelerator,
                )  # fmt: skip
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                value = float(accelerator.reduce(loss.detach(), reduction="mean"))
                losses.append(value)
                step_seconds.append(time.perf_counter() - tick)
                extra = ", ".join(f"{k} {v:.3g}" for k, v in stats.items())
                progress.update(task, completed=step, loss=f"{value:.4f}", rate=extra)
                if step % options.checkpoint_every == 0 and step < options.steps:
                    if main:
                        _save_checkpoint(out, step, base_unet, optimizer, losses, scaler)
                    accelerator.wait_for_everyone()
                if on_step is not None:
                    on_step(step)
    except KeyboardInterrupt as exc:
        reader.shutdown(wait=False, cancel_futures=True)
        record.update(status="interrupted", steps_done=len(losses), losses=losses)
        if main:
            _write_json(out / "train.json", record)
        last = _checkpoints(out)
        at = int(last[-1].name[5:]) if last else 0
        raise FinetuneError(
            f"interrupted at step {step} of {options.steps}; --resume continues from step {at}"
        ) from exc
    reader.shutdown(wait=True)

    accelerator.wait_for_everyone()
    timed = step_seconds[2:] or step_seconds
    record["reference_checksum"] = {"before": frozen_before, "after": _frozen_checksum(base_unet)}
    record.update(
        status="done",
        steps_done=len(losses),
        losses=losses,
        seconds=round(time.perf_counter() - started, 1),
        seconds_per_step=round(statistics.median(timed), 5) if timed else None,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        device=str(accelerator.device.type),
        processes=world,
        dtype=str(model.unet.dtype).removeprefix("torch."),
        mixed_precision=accelerator.mixed_precision,
    )
    if main:
        _save_lora(model.pipeline, base_unet, out)
        _plot_losses(out / "loss.png", losses, options.method)
        _write_json(out / "train.json", record)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return record


def _frozen_checksum(unet: Any) -> str:
    """A digest of every weight but the adapter's: the reference (and the base under the
    LoRA) must end the run exactly as it began."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" not in name:
                digest.update(parameter.detach().float().sum().cpu().numpy().tobytes())
                digest.update(parameter.detach().float().abs().sum().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


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
