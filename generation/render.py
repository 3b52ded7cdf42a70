"""One pipeline call for a batch of images, one ``torch.Generator`` per image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ImageSpec", "render_images"]


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """One image to render: its prompt, negative prompt and seed."""

    prompt: str
    negative: str | None
    seed: int


def render_images(
    pipeline: Any,
    specs: Sequence[ImageSpec],
    *,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    on_step: Callable[[], bool] | None = None,
) -> list[Image.Image]:
    """Render ``specs`` in one call of ``pipeline``.

    Each image gets its own CPU ``torch.Generator`` seeded with its seed, so its
    starting noise, and hence the image, does not depend on what else is in the
    batch, nor on the device.

    ``on_step`` is called after every denoising step; returning False
    interrupts the run at that step (cancellation, shutdown).
    """
    import torch

    generators = [torch.Generator(device="cpu").manual_seed(spec.seed) for spec in specs]
    negatives = [spec.negative or "" for spec in specs]

    def callback(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None and not on_step():
            pipe._interrupt = True  # diffusers checks this flag before the next step
        return kwargs

    output = pipeline(
        prompt=[spec.prompt for spec in specs],
        negative_prompt=negatives if any(negatives) else None,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generators,
        callback_on_step_end=callback,
    )
    return list(output.images)
