"""Optional NSFW check with diffusers' Stable Diffusion safety checker (off by default)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dreamrate.core.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["SafetyChecker", "load_safety_checker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SafetyChecker:
    """Flags images that match the checker's unsafe concepts."""

    model: Any
    processor: Any
    device: str

    def __call__(self, images: Sequence[Image.Image]) -> list[bool]:
        import numpy as np
        import torch

        if not images:
            return []
        pixels = self.processor(list(images), return_tensors="pt").pixel_values.to(self.device)
        arrays = [np.asarray(im, dtype=np.float32) / 255.0 for im in images]
        with torch.inference_mode():
            _, flags = self.model(images=arrays, clip_input=pixels)
        return [bool(f) for f in flags]


def load_safety_checker(model: str, *, device: str = "cpu") -> SafetyChecker:
    """Load ``StableDiffusionSafetyChecker`` and its CLIP image processor from ``model``
    (a folder or hub id holding both, e.g. ``CompVis/stable-diffusion-safety-checker``).

    Raises
    ------
    ModelError
        one line naming DREAMRATE_GENERATION_SAFETY_CHECKER and the reason.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(model).to(device).eval()
        processor = CLIPImageProcessor.from_pretrained(model)
    except (OSError, ValueError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(
            f"DREAMRATE_GENERATION_SAFETY_CHECKER: cannot load {model!r}: {reason}"
        ) from None
    logger.info("safety checker %s loaded", model)
    return SafetyChecker(model=checker, processor=processor, device=device)
