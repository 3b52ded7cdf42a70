"""Write a tiny random-weight Stable Diffusion pipeline in diffusers format, for offline trials.

The pipeline is real in every way but size: a UNet, a VAE, a CLIP text
encoder, a scheduler and a real CLIP BPE tokenizer built from the vocabulary
that open_clip ships. It loads with ``AutoPipelineForText2Image.from_pretrained``
exactly like ``stabilityai/sd-turbo``.

A random-weight VAE decodes every latent to much the same grey, and its latents of any
image are all near zero. ``colour_vae=True`` trains the tiny VAE briefly (~20 s on the
CPU) to reconstruct flat colours with a little smooth texture, so that an image's colour
has a latent of its own and survives encode and decode. (The UNet stays random: it does
not denoise, so generations keep the sampler's starting noise and still decode to grey.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrate.generation.tokens import CLIP_VOCAB_SIZE, clip_bpe_vocab

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL

__all__ = ["TINY_SD_SIZE", "write_clip_tokenizer", "write_tiny_sd"]

logger = logging.getLogger(__name__)

#: Default image size of the tiny pipeline (UNet sample 32 x VAE scale 2).
TINY_SD_SIZE = 64

#: The colour VAE's training, as (image side, batch, steps) phases: many small images learn
#: colour cheaply; the last phase, at the pipeline's own size, takes out what the zero
#: padding at the borders makes depend on the size. ~20 s on 2 CPU cores.
COLOUR_VAE_PHASES = ((16, 16, 200), (TINY_SD_SIZE, 1, 50))
#: GroupNorm groups of the colour VAE. With 32 groups on 32 channels each channel is
#: normalised alone, which wipes out the level of a flat colour (it then survives only
#: through the borders and fades at larger sizes); of 4, 8, 16 and 32 groups, 16 learnt
#: colours best. Parameter shapes do not depend on it.
COLOUR_VAE_GROUPS = 16


def write_clip_tokenizer(directory: Path) -> None:
    """Save a Hugging Face ``CLIPTokenizer`` equal to OpenAI CLIP's into ``directory``."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab()
    vocab_file = directory / "vocab.json"
    merges_file = directory / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)
    tokenizer.save_pretrained(str(directory))


def _colour_images(
    colours: torch.Tensor, size: int, generator: torch.Generator, texture: float = 0.2
) -> torch.Tensor:
    """Flat ``colours`` (N, 3) in [-1, 1] plus smooth random texture of random strength."""
    import torch
    import torch.nn.functional as F

    count = len(colours)
    strength = texture * torch.rand(count, 1, 1, 1, generator=generator)
    coarse = torch.randn(count, 3, 4, 4, generator=generator) * strength
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (colours.view(count, 3, 1, 1) + smooth).clamp(-1, 1)


def _train_colour_vae(vae: AutoencoderKL, seed: int) -> None:
    """Teach ``vae`` to reconstruct colours; set its scaling factor to 1 / latent std.

    MSE plus a small KL term (which keeps the latents near unit scale and the posterior
    noise moderate), Adam with a linearly falling rate. Colours come from a scrambled
    Sobol sequence, so every batch covers the colour cube evenly: with random colours
    the batches differ so much that the same steps learn colours markedly worse.
    """
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    colours = torch.quasirandom.SobolEngine(3, scramble=True, seed=seed)
    plan = [(size, batch) for size, batch, steps in COLOUR_VAE_PHASES for _ in range(steps)]
    with torch.no_grad():  # a small posterior std to start from, as a trained VAE has
        vae.encoder.conv_out.bias[vae.config.latent_channels :] = -4.0
    optimizer = torch.optim.Adam(vae.parameters(), lr=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / len(plan))
    vae.train()
    for size, batch in plan:
        images = _colour_images(colours.draw(batch) * 2 - 1, size, generator)
        posterior = vae.encode(images).latent_dist
        decoded = vae.decode(posterior.sample(generator=generator)).sample
        kl = posterior.kl().mean() / images[0].numel()
        loss = F.mse_loss(decoded, images) + 1e-2 * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    vae.eval()
    # What Stable Diffusion did with 0.18215: scale the latents to unit variance for the UNet.
    with torch.no_grad():
        sample = _colour_images(colours.draw(32) * 2 - 1, TINY_SD_SIZE, generator)
        std = float(vae.encode(sample).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))


def write_tiny_sd(directory: Path, *, seed: int = 0, colour_vae: bool = False) -> Path:
    """Write the tiny pipeline to ``directory`` and return it.

    Parameters
    ----------
    directory
        Target folder; created if missing, files in it replaced.
    seed
        Seed of the random weights, so two runs write identical models.
    colour_vae
        Train the VAE (about 20 s on two CPU cores) so that images keep their colours
        through it, instead of leaving its random weights. Off, the output is exactly
        that of earlier versions; on, only the VAE's weights and config differ.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SD_SIZE // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=COLOUR_VAE_GROUPS if colour_vae else 32,
        sample_size=TINY_SD_SIZE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    # The scheduler sd-turbo ships: Euler with trailing timesteps (good at 1-4 steps).
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        timestep_spacing="trailing",
        steps_offset=1,
    )
    if colour_vae:  # after every random init, so the other models match the default's
        _train_colour_vae(vae, seed)
    tokenizer_dir = directory / "tokenizer"
    write_clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    pipeline.save_pretrained(str(directory), safe_serialization=True)
    return directory
