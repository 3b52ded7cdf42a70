"""Best-of-N at generation: the active predictor scores a job's candidate images, so the
worker posts the best and keeps the rest back.

The worker (generation) cannot import the predictor (aesthetic sits above it); the shell
hands it a :class:`CandidatePicker` built here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dreamrate.aesthetic.active import ActivePredictor

if TYPE_CHECKING:
    from PIL import Image
    from sqlalchemy.ext.asyncio import AsyncEngine

    from dreamrate.aesthetic.clip_model import ClipModel

__all__ = ["CandidatePicker"]

logger = logging.getLogger(__name__)


class CandidatePicker:
    """Scores images with the active predictor over the configured CLIP model.

    Parameters
    ----------
    engine
        Database with the predictor registry (the active predictor is looked up per call,
        so activating another takes effect at the next batch).
    embedding_model, pretrained, device
        The configured open_clip model (loaded on first use, then kept warm).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        embedding_model: str,
        pretrained: str | None,
        device: str = "auto",
    ) -> None:
        from dreamrate.aesthetic.clip_model import model_spec

        self._spec = (embedding_model, pretrained, device)
        self._active = ActivePredictor(engine, model_spec(embedding_model, pretrained)[2])
        self._clip: ClipModel | None = None

    def _load_clip(self) -> ClipModel:
        from dreamrate.aesthetic.clip_model import load_clip

        if self._clip is None:
            model, pretrained, device = self._spec
            self._clip = load_clip(model, pretrained, device=device)  # type: ignore[arg-type]
        return self._clip

    async def scores(self, images: Sequence[Image.Image], run: Any = None) -> list[float] | None:
        """|coro| Each image's predicted score, or None when no predictor is active (then
        the caller keeps the candidates in seed order). ``run`` runs the blocking CLIP pass
        (the worker passes its torch thread)."""
        predictor = await self._active.get()
        if predictor is None:
            return None

        def embed_and_score() -> list[float]:
            clip = self._load_clip()
            return [float(s) for s in predictor.predict(clip.embed_images(list(images)))]

        return await (run or asyncio.to_thread)(embed_and_score)
