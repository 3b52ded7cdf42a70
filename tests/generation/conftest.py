"""Fixtures for the generation tests: a queue on a fresh database, and request factories."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dreamrate.db.users import ensure_user
from dreamrate.generation.queue import JobRecord, JobRepository
from dreamrate.generation.request import GenerationRequest


def make_request(prompt: str = "a lighthouse", **overrides: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "prompt": prompt,
        "negative_prompt": None,
        "seed": 1234,
        "steps": 2,
        "guidance": 0.0,
        "width": 64,
        "height": 64,
        "num_images": 1,
        "model": "tiny",
    }
    fields.update(overrides)
    return GenerationRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def repo(engine) -> JobRepository:  # type: ignore[no-untyped-def]
    return JobRepository(
        engine, max_attempts=3, lease_seconds=60, per_user_cap=100, global_cap=10_000
    )


@pytest.fixture
def user_factory(engine) -> Callable[[int], object]:  # type: ignore[no-untyped-def]

    async def make(discord_id: int) -> int:
        return (await ensure_user(engine, discord_id, f"user{discord_id}")).id

    return make


async def enqueue(
    repo: JobRepository, user_id: int, prompt: str = "p", **overrides: object
) -> JobRecord:
    return await repo.enqueue(make_request(prompt, **overrides), requester_id=user_id)
