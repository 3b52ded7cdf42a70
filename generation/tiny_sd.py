"""Write a tiny random-weight Stable Diffusion pipeline in diffusers format, for offline trials.

The pipeline is real in every way but size: a UNet, a VAE, a CLIP text
encoder, a scheduler and a real CLIP BPE tokenizer built from the vocabulary
that open_clip ships. It loads with ``AutoPipelineForText2Image.from_pretrained``
exactly like ``stabilityai/sd-turbo``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dreamrate.generation.tokens import CLIP_VOCAB_SIZE, clip_bpe_vocab

__all__ = ["TINY_SD_SIZE", "write_clip_tokenizer", "write_tiny_sd"]

logger = logging.getLogger(__name__)

#: Default image size of the tiny pipeline (UNet sample 32 x VAE scale 2).
TINY_SD_SIZE = 64


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


def write_tiny_sd(directory: Path, *, seed: int = 0) -> Path:
    """Write the tiny pipeline to ``directory`` and return it.

    Parameters
    ----------
    directory
        Target folder; created if missing, files in it replaced.
    seed
        Seed of the random weights, so two runs write identical models.
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
        norm_num_groups=32,
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
