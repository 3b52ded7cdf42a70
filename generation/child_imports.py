"""What a worker child imports before its first render, in one module.

The bot's :class:`~dreamrate.services.WorkerProcess` starts its children from a forkserver
that imports this module once: each child then starts with torch, diffusers and the Stable
Diffusion classes already in memory (shared copy-on-write) and is ready in about a second
instead of re-importing them (6.5 s on a 2-core CI machine, most of a bot restart).
Importing is all it does: no thread, no CUDA context, nothing a fork could not copy.
"""

from __future__ import annotations

# diffusers and transformers import their classes lazily, on first attribute access: name
# each one a Stable Diffusion pipeline loads, so the import happens here and not per child.
from diffusers import (  # noqa: F401
    AutoencoderKL,
    AutoPipelineForText2Image,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

import dreamrate.generation.worker  # noqa: F401
