"""How members see the model that made an image: by its registered name, never by the
server's path to it (``/srv/models/dreamy-v2`` is ``dreamy`` once registered, else
``dreamy-v2``); a hub id (``stabilityai/sd-turbo``) as it is."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import PurePath

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import RegisteredModel

__all__ = ["ModelNames", "model_label", "model_names"]


async def model_names(engine: AsyncEngine) -> dict[str, str]:
    """The registered models' names, by the name and by the folder each one loads."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(RegisteredModel.name, RegisteredModel.path))).all()
    names = {str(path): str(name) for name, path in rows}
    names.update({str(name): str(name) for name, _ in rows})
    return names


def model_label(model: str, registered: Mapping[str, str]) -> str:
    """How members see a job's ``model``: its registered name, else a local folder's own
    name (a server's paths are nobody's business), else the model id as it is
    (``stabilityai/sd-turbo``)."""
    if model in registered:
        return registered[model]
    path = PurePath(model)
    if path.is_absolute() or model.startswith(("~", "./", "../")) or os.path.isdir(model):
        return path.name or model
    return model


class ModelNames:
    """:func:`model_names`, read at most every ``ttl`` seconds (models are registered
    rarely; a page need not ask each time)."""

    def __init__(self, engine: AsyncEngine, ttl: float = 30.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._read: tuple[float, dict[str, str]] | None = None

    async def get(self) -> dict[str, str]:
        if self._read is None or time.monotonic() - self._read[0] >= self.ttl:
            self._read = (time.monotonic(), await model_names(self.engine))
        return self._read[1]
