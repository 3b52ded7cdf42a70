"""Loading a diffusers text-to-image pipeline from a model id or a local folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrate.core.devices import DevicePreference, pick_device, pick_dtype
from dreamrate.core.errors import ModelError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

__all__ = ["OFFLINE_HINT", "load_text2image", "looks_like_path"]

logger = logging.getLogger(__name__)

OFFLINE_HINT = (
    "for offline trials run `dreamrate models make-tiny models` and use the settings it prints"
)


def looks_like_path(model: str) -> bool:
    """Whether ``model`` names a folder rather than a hub id like ``org/name``."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def load_text2image(
    model: str, *, device: DevicePreference = "auto", setting: str = "DREAMRATE_GENERATION_MODEL"
) -> DiffusionPipeline:
    """Load ``model`` with ``AutoPipelineForText2Image``, on the best device, fp16 on GPUs.

    A hub id is taken from the local cache first; only when it is missing there
    is the hub asked (unless ``HF_HUB_OFFLINE`` is set).

    Raises
    ------
    ModelError
        with one line naming the model, why it failed and how to work offline.
    """
    from diffusers import AutoPipelineForText2Image

    try:
        chosen = pick_device(device)
    except ValueError as exc:
        raise ModelError(f"{setting}: {exc}") from None
    dtype = pick_dtype(chosen)
    kwargs = {"dtype": dtype}
    _quiet_loading()
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not (path / "model_index.json").is_file():
            what = (
                "does not exist"
                if not path.exists()
                else "has no model_index.json (not a diffusers pipeline)"
            )
            raise ModelError(f"{setting}: {path} {what}; {OFFLINE_HINT}")
        sources = [(str(path), {})]
    else:
        sources = [(model, {"local_files_only": True})]
        if not os.environ.get("HF_HUB_OFFLINE"):
            sources.append((model, {}))
    last: Exception | None = None
    for source, extra in sources:
        try:
            pipeline = AutoPipelineForText2Image.from_pretrained(source, **kwargs, **extra)
        except (OSError, ValueError) as exc:
            last = exc
            continue
        pipeline.set_progress_bar_config(disable=True)
        logger.info("loaded %s on %s (%s)", model, chosen, str(dtype).removeprefix("torch."))
        return pipeline.to(chosen)
    reason = str(last).splitlines()[0] if last else "unknown error"
    if not looks_like_path(model):
        raise ModelError(
            f"{setting}: cannot load {model!r}: not in the local Hugging Face cache and the hub "
            f"is unreachable (no internet?); {OFFLINE_HINT}"
        ) from None
    raise ModelError(f"{setting}: cannot load {model!r}: {reason}") from None


def _quiet_loading() -> None:
    # Loading bars and advice about optional packages are noise in a service log.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
