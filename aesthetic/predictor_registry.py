"""Which predictors the community has, and which one drives active selection."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.aesthetic.predictor import Predictor
from dreamrate.db.models import Predictor as PredictorRow

__all__ = ["active_predictor_path", "register_predictor"]


async def register_predictor(
    engine: AsyncEngine, predictor: Predictor, path: Path, *, activate: bool
) -> None:
    """Record (or refresh) the predictor at ``path``; with ``activate`` it becomes the only active one."""
    name = f"{predictor.name}-{predictor.id}"
    values = {
        "path": str(Path(path).resolve()),
        "embedding_model": predictor.embedding_model,
        "meta": {"id": predictor.id, "kind": predictor.kind, "source": predictor.source},
        "metrics": predictor.metrics,
    }
    async with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
        if activate:
            await conn.execute(update(PredictorRow).values(active=False))
        existing = (
            await conn.execute(select(PredictorRow.id).where(PredictorRow.name == name))
        ).scalar_one_or_none()
        if existing is None:
            await conn.execute(insert(PredictorRow).values(name=name, active=activate, **values))
        else:
            await conn.execute(
                update(PredictorRow)
                .where(PredictorRow.id == existing)
                .values(active=activate, **values)
            )


async def active_predictor_path(engine: AsyncEngine) -> Path | None:
    """The folder of the active predictor, or None when none is active."""
    async with engine.connect() as conn:
        path = await conn.scalar(select(PredictorRow.path).where(PredictorRow.active.is_(True)))
    return None if path is None else Path(path)
