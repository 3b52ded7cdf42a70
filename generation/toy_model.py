"""Train a small text-to-image model of the toy world on the CPU, as a standard diffusers folder.

``dreamrate models make-toy`` writes it. From one seed, in turn:

1. a small ``AutoencoderKL`` (32 px images to 8x8x4 latents), trained to reconstruct the
   world's images with the shape's pixels weighed up (it covers a few percent of the image,
   and a plain mean squared error learns the background and a smudge), its scaling factor
   set so latents have unit variance, as Stable Diffusion's 0.18215 does;
2. a tiny CLIP text encoder (the real CLIP BPE tokenizer, 16 tokens: the world's captions
   are short) and a ``UNet2DConditionModel`` trained together from scratch with Stable
   Diffusion's objective (epsilon prediction, its scaled-linear noise schedule), weighted by
   min-SNR-5 (Hang et al., 2023), captions dropped 10 % of the time so classifier-free
   guidance works, weights averaged (EMA) for sampling. The UNet reads the caption through
   cross-attention on its coarse level and, pooled, added to its time embedding
   (``addition_embed_type="text"``), which lets so small a model learn colours within a few
   thousand steps; a frozen random text encoder learnt them at a third of the rate.

The saved folder loads with ``AutoPipelineForText2Image.from_pretrained`` like any Stable
Diffusion 1.x folder, so ``generate``, the worker, ``finetune``, ``models add`` and the bot
use it unchanged; from then on the text encoder is frozen like any other (fine-tunes train
a LoRA of the UNet). Seeded, so two runs with one seed on one machine write the same weights.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamrate.core.errors import DreamrateError
from dreamrate.generation.model_info import CALL_DEFAULTS_KEY
from dreamrate.generation.tiny_sd import write_clip_tokenizer
from dreamrate.generation.tokens import CLIP_VOCAB_SIZE
from dreamrate.generation.toy_world import caption, random_scene, render

if TYPE_CHECKING:
    import torch

__all__ = ["TOY_PRESETS", "ToyConfig", "ToyModelError", "train_toy_model"]

logger = logging.getLogger(__name__)

#: Tokens the toy's tokenizer pads to: its captions take at most 14.
TOY_TOKENS = 16


class ToyModelError(DreamrateError):
    """The toy model cannot be written."""


@dataclass(frozen=True)
class ToyConfig:
    """How big the toy model is and how long each part trains."""

    image_size: int = 32
    scenes: int = 4000  #: distinct training images (captions are redrawn every time)
    vae_channels: tuple[int, ...] = (16, 32, 32)
    vae_steps: int = 600
    vae_batch: int = 16
    vae_lr: float = 2e-3
    text_width: int = 32
    unet_channels: tuple[int, ...] = (32, 64)
    unet_steps: int = 1500
    unet_batch: int = 64
    unet_lr: float = 1e-3
    min_snr: float = 5.0
    ema: float = 0.995
    caption_dropout: float = 0.1
    #: What the model is meant to be called with (written into ``model_index.json``).
    steps: int = 20
    guidance: float = 4.0


TOY_PRESETS: dict[str, ToyConfig] = {
    "full": ToyConfig(),
    # The suite's and a quick try's: the same model, trained less (colours, less shape).
    "small": ToyConfig(scenes=2000, vae_steps=300, unet_steps=700),
}


def _progress(show: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show,
    )


def _world(config: ToyConfig, seed: int) -> tuple[list[Any], np.ndarray]:
    rng = np.random.default_rng([seed, 1])
    scenes = [random_scene(rng) for _ in range(config.scenes)]
    pixels = np.stack([np.asarray(render(s, config.image_size)) for s in scenes])
    return scenes, pixels


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _build(config: ToyConfig) -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    blocks = len(config.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=config.image_size,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=config.text_width,
            intermediate_size=config.text_width * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=config.text_width,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    levels = len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=config.image_size // 2 ** (blocks - 1),
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=config.unet_channels,
        # Attention only below the top level: a caption says what and where, which the
        # coarse levels carry; attention over the 8x8 level would cost as much as the rest.
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        cross_attention_dim=config.text_width,
        attention_head_dim=8,
        norm_num_groups=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )
    return vae, text_encoder, unet


def _train_vae(
    vae: Any, images: torch.Tensor, config: ToyConfig, seed: int, progress: Any, device: str
) -> list[float]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.vae_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.vae_lr, total_steps=config.vae_steps, pct_start=0.1
    )
    border = torch.cat(
        [images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=2
    )
    background = border.median(dim=2).values[:, :, None, None]
    masks = ((images - background).abs().sum(dim=1, keepdim=True) > 0.3).float()
    losses: list[float] = []
    task = progress.add_task("toy VAE", total=config.vae_steps, loss="-")
    vae.train()
    for _ in range(config.vae_steps):
        picked = torch.randint(0, len(images), (config.vae_batch,), generator=generator)
        batch = images[picked].to(device)
        posterior = vae.encode(batch).latent_dist
        # Drawn on the CPU, so a GPU run draws the same numbers.
        draw = torch.randn(posterior.mean.shape, generator=generator).to(device)
        decoded = vae.decode(posterior.mean + posterior.std * draw).sample
        kl = posterior.kl().mean() / batch[0].numel()
        # The shape covers a few percent of the image: its pixels weigh ten times more.
        weight = 1.0 + 9.0 * masks[picked].to(device)
        loss = (weight * (decoded - batch).pow(2)).mean() / weight.mean() + 1e-3 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        progress.update(task, advance=1, loss=f"{losses[-1]:.4f}")
        if len(losses) % 100 == 0:
            logger.info(
                "toy VAE: step %d of %d, loss %.4f", len(losses), config.vae_steps, losses[-1]
            )
    vae.eval()
    return losses


@dataclass
class _Captions:
    """Token ids of the world's captions, drawn anew for each batch, and the empty prompt."""

    tokenizer: Any
    scenes: list[Any]

    def ids(self, indices: list[int], rng: np.random.Generator, dropout: float) -> torch.Tensor:
        texts = ["" if rng.random() < dropout else caption(self.scenes[i], rng) for i in indices]
        return self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids


def _train_unet(
    unet: Any,
    text_encoder: Any,
    latents: torch.Tensor,
    captions: _Captions,
    config: ToyConfig,
    seed: int,
    progress: Any,
    device: str,
) -> tuple[Any, Any, list[float]]:
    """Train the UNet and the text encoder together; return their averages and the losses."""
    import copy

    import torch
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
    )
    alphas = noise_scheduler.alphas_cumprod
    snr = (alphas / (1 - alphas)).to(device)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 2])
    averaged = [copy.deepcopy(m).requires_grad_(False) for m in (unet, text_encoder)]
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.unet_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.unet_lr, total_steps=config.unet_steps, pct_start=0.05
    )
    losses: list[float] = []
    task = progress.add_task("toy UNet", total=config.unet_steps, loss="-")
    unet.train()
    text_encoder.train()
    for step in range(config.unet_steps):
        indices = rng.integers(0, len(latents), config.unet_batch).tolist()
        states = text_encoder(captions.ids(indices, rng, config.caption_dropout).to(device))[0]
        clean = latents[indices].to(device)
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, 1000, (len(indices),), generator=generator).to(device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        error = (unet(noisy, timesteps, states).sample - noise).pow(2).mean(dim=(1, 2, 3))
        # min-SNR-gamma: the easy, nearly clean steps stop dominating the gradient.
        weight = snr[timesteps].clamp(max=config.min_snr) / snr[timesteps]
        loss = (error * weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(config.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, live in zip(averaged, (unet, text_encoder), strict=True):
                for a, p in zip(average.parameters(), live.parameters(), strict=True):
                    a.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        progress.update(task, advance=1, loss=f"{np.mean(losses[-50:]):.4f}")
        if len(losses) % 100 == 0:
            logger.info(
                "toy UNet: step %d of %d, loss %.4f", len(losses), config.unet_steps,
                np.mean(losses[-100:]),
            )  # fmt: skip
    return averaged[0].eval(), averaged[1].eval(), losses


def train_toy_model(
    directory: Path,
    *,
    seed: int = 0,
    config: ToyConfig | str = "full",
    show_progress: bool = True,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train the toy model and save it as a diffusers folder in ``directory`` (which must be
    a fresh staging folder: the caller moves it into place). Returns its ``toy.json`` record.

    ``device`` ``"cuda"`` trains on a GPU (the same draws, float rounding aside)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTokenizer

    if isinstance(config, str):
        try:
            config = TOY_PRESETS[config]
        except KeyError as exc:
            raise ToyModelError(
                f"--preset: one of {', '.join(TOY_PRESETS)}, not {config!r}"
            ) from exc
    started = time.perf_counter()
    torch.manual_seed(seed)
    vae, text_encoder, unet = (m.to(device) for m in _build(config))
    tokenizer_dir = directory / "tokenizer"
    write_clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=TOY_TOKENS)

    scenes, pixels = _world(config, seed)
    images = _to_tensor(pixels)
    with _progress(show_progress) as progress:
        vae_losses = _train_vae(vae, images, config, seed, progress, device)
        with torch.no_grad():
            means = torch.cat(
                [
                    vae.encode(images[i : i + 256].to(device)).latent_dist.mean.cpu()
                    for i in range(0, len(images), 256)
                ]
            )
        vae.register_to_config(scaling_factor=round(float(1.0 / means.std()), 5))
        latents = means * vae.config.scaling_factor
        unet, text_encoder, unet_losses = _train_unet(
            unet,
            text_encoder,
            latents,
            _Captions(tokenizer, scenes),
            config,
            seed,
            progress,
            device,
        )

    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    vae, text_encoder, unet = vae.cpu(), text_encoder.cpu(), unet.cpu()
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.requires_grad_(False),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    diffusers_logging.disable_progress_bar()
    pipeline.save_pretrained(str(directory), safe_serialization=True)
    index_path = directory / "model_index.json"
    index = json.loads(index_path.read_text())
    index[CALL_DEFAULTS_KEY] = {"steps": config.steps, "guidance": config.guidance}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    record = {
        "format": "dreamrate-toy-model",
        "version": 1,
        "seed": seed,
        "config": asdict(config),
        "seconds": round(time.perf_counter() - started, 1),
        "device": device,
        "vae_final_loss": float(np.mean(vae_losses[-20:])),
        "unet_final_loss": float(np.mean(unet_losses[-100:])),
    }
    (directory / "toy.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
