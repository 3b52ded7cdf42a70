"""The active predictor for picking images to rate (bot and web), loaded once and reloaded when
it changes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dreamrate.aesthetic.predictor import META_FILE, Predictor, PredictorError, load_predictor
from dreamrate.aesthetic.predictor_registry import active_predictor_path

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ActivePredictor"]

logger = logging.getLogger(__name__)


class ActivePredictor:
    """The predictor ``/rate`` and the feed choose with, cached by folder and file time.

    Parameters
    ----------
    engine
        Database with the predictor registry.
    embedding_model
        The configured embedding model; a predictor made for another is not used.
    """

    def __init__(self, engine: AsyncEngine, embedding_model: str) -> None:
        self.engine = engine
        self.embedding_model = embedding_model
        self._cached: tuple[Path, float, Predictor] | None = None

    async def get(self) -> Predictor | None:
        """|coro| The active predictor, or None (none active, or unusable: logged)."""
        path = await active_predictor_path(self.engine)
        if path is None:
            return None
        try:
            mtime = (path / META_FILE).stat().st_mtime
            if self._cached is not None and self._cached[:2] == (path, mtime):
                return self._cached[2]
            predictor = load_predictor(path, embedding_model=self.embedding_model)
        except (OSError, PredictorError) as exc:
            logger.warning("active predictor unusable, rating fewest-rated images first: %s", exc)
            return None
        self._cached = (path, mtime, predictor)
        return predictor
