"""Write a tiny random-weight open_clip model (config + safetensors), for offline trials.

The folder follows open_clip's own hub layout (``open_clip_config.json`` +
``open_clip_model.safetensors``), so it loads through open_clip's real code
path with ``create_model_and_transforms("local-dir:PATH")``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["TINY_CLIP_CONFIG", "TINY_CLIP_DIM", "write_tiny_clip"]

logger = logging.getLogger(__name__)

TINY_CLIP_DIM = 32
TINY_CLIP_CONFIG: dict[str, Any] = {
    "model_cfg": {
        "embed_dim": TINY_CLIP_DIM,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    },
    # OpenAI CLIP's normalisation, as ViT-L-14/openai uses.
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}


def write_tiny_clip(directory: Path, *, seed: int = 0) -> Path:
    """Write the tiny open_clip model to ``directory`` and return it."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = TINY_CLIP_CONFIG["model_cfg"]
    model = CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    (directory / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    return directory
