"""A model's own defaults (size, steps, guidance), read from its config files without loading it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dreamrate.generation.pipeline import looks_like_path

__all__ = ["CALL_DEFAULTS_KEY", "PIPELINE_CALL_DEFAULTS", "ModelDefaults", "model_defaults"]

logger = logging.getLogger(__name__)

#: ``num_inference_steps`` and ``guidance_scale`` defaults of diffusers pipelines' ``__call__``.
PIPELINE_CALL_DEFAULTS: dict[str, tuple[int, float]] = {
    "StableDiffusionPipeline": (50, 7.5),
    "StableDiffusionXLPipeline": (50, 5.0),
    "StableDiffusion3Pipeline": (28, 7.0),
    "FluxPipeline": (28, 3.5),
    "PixArtAlphaPipeline": (20, 4.5),
}
_FALLBACK = (50, 7.5)
#: ``model_index.json``'s key for a model's own call defaults: ``{"steps": N, "guidance": X}``.
CALL_DEFAULTS_KEY = "_dreamrate_call_defaults"


@dataclass(frozen=True, slots=True)
class ModelDefaults:
    """What a model renders when a request leaves these out."""

    width: int
    height: int
    steps: int
    guidance: float


def _read_json(model: str, filename: str) -> dict[str, Any] | None:
    if looks_like_path(model):
        path = Path(model).expanduser() / filename
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, filename)
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


@lru_cache(maxsize=32)
def model_defaults(model: str) -> ModelDefaults:
    """Size from the UNet sample size times the VAE's scale, steps and guidance from the
    model's own ``_dreamrate_call_defaults`` or else its pipeline class.

    Works from a local folder or the Hugging Face cache; a model not available
    yet gets Stable Diffusion's 512 px / 50 steps / 7.5.
    """
    try:
        index = _read_json(model, "model_index.json") or {}
        unet = (
            _read_json(model, "unet/config.json")
            or _read_json(model, "transformer/config.json")
            or {}
        )
        vae = _read_json(model, "vae/config.json") or {}
    except (OSError, ValueError) as exc:
        logger.warning(
            "cannot read the config of %s (%s); assuming Stable Diffusion defaults", model, exc
        )
        index, unet, vae = {}, {}, {}
    steps, guidance = PIPELINE_CALL_DEFAULTS.get(index.get("_class_name", ""), _FALLBACK)
    # A model may say what it is meant to be called with (the toy model does); diffusers
    # itself ignores keys of model_index.json that start with an underscore.
    own = index.get(CALL_DEFAULTS_KEY)
    if isinstance(own, dict):
        steps = int(own.get("steps", steps))
        guidance = float(own.get("guidance", guidance))
    sample = unet.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, list) else sample
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    size = int(sample) * scale
    return ModelDefaults(width=size, height=size, steps=steps, guidance=guidance)
