"""Loading an open_clip model by name + pretrained tag, checkpoint file or local folder,
and turning images into L2-normalised float32 embeddings."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamrate.core.devices import DevicePreference, pick_device
from dreamrate.core.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["ClipModel", "embedding_dim", "load_clip", "model_spec"]

logger = logging.getLogger(__name__)

_OFFLINE_HINT = (
    "for offline trials run `dreamrate models make-tiny models` and use the settings it prints"
)


def model_spec(model: str, pretrained: str | None) -> tuple[str, str | None, str]:
    """Normalise a configured model into ``(open_clip name, pretrained, id)``.

    A folder holding ``open_clip_config.json`` becomes ``local-dir:FOLDER`` (its
    own weights; ``pretrained`` ignored). The id names the embedding space
    (``ViT-L-14/openai``) and is stored with every embedding and predictor.
    """
    if (
        not model.startswith(("local-dir:", "hf-hub:"))
        and (Path(model) / "open_clip_config.json").is_file()
    ):
        model = f"local-dir:{Path(model).resolve()}"
    if model.startswith(("local-dir:", "hf-hub:")):
        return model, None, model
    pretrained = pretrained or None
    return model, pretrained, f"{model}/{pretrained}" if pretrained else model


def embedding_dim(model: str, pretrained: str | None = None) -> int | None:
    """The embedding width of a model from its config, without loading weights (None if unknown)."""
    import json

    name, _, _ = model_spec(model, pretrained)
    if name.startswith("local-dir:"):
        config = Path(name.removeprefix("local-dir:")) / "open_clip_config.json"
        try:
            return int(json.loads(config.read_text())["model_cfg"]["embed_dim"])
        except (OSError, ValueError, KeyError):
            return None
    if name.startswith("hf-hub:"):
        return None
    # Read open_clip's bundled config without importing it (that would import torch).
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    for location in (spec.submodule_search_locations or []) if spec else []:
        config = Path(location) / "model_configs" / f"{name}.json"
        if config.is_file():
            try:
                return int(json.loads(config.read_text())["embed_dim"])
            except (OSError, ValueError, KeyError):
                return None
    return None


def _is_checkpoint_path(tag: str) -> bool:
    return tag.startswith(("/", "./", "../")) or tag.endswith(
        (".pt", ".pth", ".bin", ".safetensors")
    )


@dataclass(frozen=True, slots=True)
class ClipModel:
    """A loaded open_clip model, kept warm, with its preprocessing."""

    model: Any
    preprocess: Any
    id: str  #: e.g. ``ViT-L-14/openai``
    dim: int
    device: str

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed ``images`` as an ``(n, dim)`` float32 array of unit vectors."""
        import numpy as np
        import torch

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_batch(torch.stack([self.preprocess(im.convert("RGB")) for im in images]))

    def embed_batch(self, batch: Any) -> np.ndarray:
        """The forward pass alone: preprocessed ``(n, 3, H, W)`` tensors to unit float32
        vectors. On CUDA it runs in float16 (autocast), from pinned memory."""
        import numpy as np
        import torch

        cuda = self.device.startswith("cuda")
        if cuda:
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        else:
            batch = batch.to(self.device)
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=cuda):
            features = self.model.encode_image(batch).float()
        features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return features.cpu().numpy().astype(np.float32, copy=False)


def load_clip(
    model: str,
    pretrained: str | None,
    *,
    device: DevicePreference = "auto",
) -> ClipModel:
    """Load an open_clip model through ``create_model_and_transforms``.

    Raises
    ------
    ModelError
        one line naming the model and why it could not be loaded.
    """
    import open_clip

    name, tag, model_id = model_spec(model, pretrained)
    if tag and _is_checkpoint_path(tag) and not Path(tag).is_file():
        raise ModelError(f"DREAMRATE_EMBEDDING_PRETRAINED: checkpoint {tag} does not exist")
    if name.startswith("local-dir:") and not Path(name.removeprefix("local-dir:")).is_dir():
        raise ModelError(
            f"DREAMRATE_EMBEDDING_MODEL: {name.removeprefix('local-dir:')} does not exist; {_OFFLINE_HINT}"
        )
    if not name.startswith(("local-dir:", "hf-hub:")) and name not in open_clip.list_models():
        raise ModelError(
            f"DREAMRATE_EMBEDDING_MODEL: unknown open_clip model {name!r} "
            "(see open_clip.list_models(), or give local-dir:PATH)"
        )
    try:
        chosen = pick_device(device)
    except ValueError as exc:
        raise ModelError(f"DREAMRATE_EMBEDDING_DEVICE: {exc}") from None
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=tag, device=chosen
        )
    except Exception as exc:  # open_clip raises RuntimeError, OSError or hub errors
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0][:200]
        offline = (
            os.environ.get("HF_HUB_OFFLINE") or "resolve" in reason or "connect" in reason.lower()
        )
        hint = f"; {_OFFLINE_HINT}" if offline or not name.startswith("local-dir:") else ""
        raise ModelError(
            f"DREAMRATE_EMBEDDING_MODEL: cannot load {model_id!r}: {reason}{hint}"
        ) from None
    clip.eval()
    dim = int(clip.visual.output_dim)
    logger.info("loaded open_clip %s (%d-d) on %s", model_id, dim, chosen)
    return ClipModel(model=clip, preprocess=preprocess, id=model_id, dim=dim, device=chosen)
