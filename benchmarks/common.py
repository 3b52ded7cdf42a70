"""Helpers shared by the benchmarks: throwaway databases, tiny models, markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = [
    "machine",
    "percentile",
    "postgres_database",
    "print_table",
    "sqlite_database",
    "tiny_models",
]

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def machine() -> str:
    """One line naming the machine, printed with every table."""
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:  # pragma: no cover
        device = "?"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, Python {platform.python_version()}"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


async def _pg(sql: str) -> None:
    import asyncpg

    url = make_url(os.environ.get("DREAMRATE_TEST_POSTGRES_URL", DEFAULT_PG))
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database at head, dropped afterwards."""
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade

    name = f"dreamrate_bench_{uuid.uuid4().hex[:10]}"
    await _pg(f'CREATE DATABASE "{name}"')
    url = make_url(os.environ.get("DREAMRATE_TEST_POSTGRES_URL", DEFAULT_PG)).set(database=name)
    text = url.render_as_string(hide_password=False)
    engine = create_engine(text)
    await upgrade(engine)
    await engine.dispose()
    try:
        yield text
    finally:
        await _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def sqlite_database() -> AsyncIterator[str]:
    """A fresh SQLite database at head in a temporary folder."""
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        engine = create_engine(url)
        await upgrade(engine)
        await engine.dispose()
        yield url


def tiny_models() -> Path:
    """Tiny models written once into a cache folder."""
    from dreamrate.tiny_models import make_tiny_models

    folder = Path(tempfile.gettempdir()) / "dreamrate-bench-models"
    if not (folder / "tiny-sd" / "model_index.json").is_file():
        make_tiny_models(folder)
    return folder / "tiny-sd"
