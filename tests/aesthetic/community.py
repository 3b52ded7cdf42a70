"""A small rated community in a real database: prompts, image files, members and ratings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Choice, Image, Job, JobStatus, Rating, User
from dreamrate.db.types import utcnow
from dreamrate.generation.store import FolderStore

#: The guild the seeded community's images are made in.
GUILD = 7


@dataclass
class Community:
    image_ids: list[int]
    brightness: dict[int, float]  #: the hidden taste: brighter is better
    removed_image: int
    banned_user: int
    opted_out_user: int


async def seed_community(
    engine: AsyncEngine,
    images_dir: Path,
    *,
    prompts: int = 12,
    per_prompt: int = 3,
    raters: int = 6,
    seed: int = 0,
    guild_id: int = GUILD,
) -> Community:
    rng = np.random.default_rng(seed)
    store = FolderStore(images_dir)
    image_ids: list[int] = []
    brightness: dict[int, float] = {}
    async with engine.begin() as conn:
        user_ids = [
            (
                await conn.execute(
                    insert(User).values(discord_id=1000 + k, name=f"member{k}").returning(User.id)
                )
            ).scalar_one()
            for k in range(raters + 2)
        ]
        banned, opted_out = user_ids[-2], user_ids[-1]
        for p in range(prompts):
            job_id = (
                await conn.execute(
                    insert(Job)
                    .values(
                        requester_id=user_ids[p % raters],
                        guild_id=guild_id,
                        prompt=f"a painting number {p}",
                        model="tiny",
                        width=32,
                        height=32,
                        steps=1,
                        guidance=0,
                        seed=p,
                        num_images=per_prompt,
                        status=JobStatus.DONE,
                    )
                    .returning(Job.id)
                )
            ).scalar_one()
            hue = rng.integers(0, 255, 3)
            for index in range(per_prompt):
                level = float(rng.uniform(0.1, 1.0))
                pixels = (np.clip(hue * level + rng.normal(0, 20, (32, 32, 3)), 0, 255)).astype(
                    np.uint8
                )
                sha, rel = store.save(PILImage.fromarray(pixels))
                image_id = (
                    await conn.execute(
                        insert(Image)
                        .values(
                            job_id=job_id,
                            index=index,
                            seed=p * 10 + index,
                            width=32,
                            height=32,
                            sha256=sha,
                            path=rel,
                            discord_message_id=900_000 + p * 10 + index,
                        )
                        .returning(Image.id)
                    )
                ).scalar_one()
                image_ids.append(image_id)
                brightness[image_id] = float(pixels.mean())
        lo, hi = min(brightness.values()), max(brightness.values())
        rows = []
        for image_id in image_ids:
            for user in rng.choice(user_ids[:raters], 3, replace=False):
                taste = 1 + 9 * (brightness[image_id] - lo) / (hi - lo)
                value = float(np.clip(np.rint(taste + rng.normal(0, 1)), 1, 10))
                rows.append({"user_id": int(user), "image_id": image_id, "value": value})
            # Banned and opted-out members rate everything 1: they must never count.
            for user in (banned, opted_out):
                rows.append({"user_id": user, "image_id": image_id, "value": 1.0})
        # A few seconds apart, as people rate: the speed check flags sub-second raters.
        start = utcnow() - timedelta(seconds=5 * len(rows))
        await conn.execute(
            insert(Rating),
            [
                {
                    **row,
                    "scale": "numbers-10",
                    "source": "reaction",
                    "rated_at": start + timedelta(seconds=5 * k),
                    "created_at": start + timedelta(seconds=5 * k),
                    "updated_at": start + timedelta(seconds=5 * k),
                }
                for k, row in enumerate(rows)
            ],
        )
        await conn.execute(User.__table__.update().where(User.id == banned).values(banned=True))
        await conn.execute(
            User.__table__.update().where(User.id == opted_out).values(opted_out=True)
        )
        removed = image_ids[0]
        await conn.execute(Image.__table__.update().where(Image.id == removed).values(removed=True))
    return Community(image_ids, brightness, removed, banned, opted_out)


async def seed_choices(
    engine: AsyncEngine, community: Community, *, choosers: int = 6, seed: int = 0
) -> list[int]:
    """Comparison posts of every pair of images within a prompt, and members choosing on
    them through the real recording path (the brighter image, mostly; sometimes a tie).
    The banned and opted-out members' choices are stored as if made before: never to count.
    Returns the posts' message ids."""
    from itertools import combinations

    from dreamrate.community.posts import record_comparison
    from dreamrate.ratings.decisions import ReactionEvent
    from dreamrate.ratings.scale import RatingScale
    from dreamrate.ratings.service import RatingService

    rng = np.random.default_rng(seed)
    scale = RatingScale("numbers-10", ("1️⃣",), (1.0,))
    per_job: dict[int, list[int]] = {}
    async with engine.connect() as conn:
        for image_id, job_id in await conn.execute(
            select(Image.id, Image.job_id).where(Image.id.in_(community.image_ids))
        ):
            per_job.setdefault(int(job_id), []).append(int(image_id))
    messages, events, stale = [], [], []
    for images in per_job.values():
        for a, b in combinations(sorted(images), 2):
            message_id = 800_000 + len(messages)
            await record_comparison(
                engine, message_id=message_id, pair=(a, b), channel_id=5, kind="compare"
            )
            messages.append(message_id)
            for k in range(choosers):
                gap = community.brightness[a] - community.brightness[b]
                p_a = 1.0 / (1.0 + np.exp(-gap / 8.0))
                roll = rng.random()
                emoji = "🟰" if roll < 0.05 else ("⬅️" if rng.random() < p_a else "➡️")
                events.append(
                    ReactionEvent(
                        added=True,
                        discord_user_id=1000 + k,
                        message_id=message_id,
                        emoji=emoji,
                        guild_id=GUILD,
                        received_at=utcnow(),
                    )
                )
            for user in (community.banned_user, community.opted_out_user):
                stale.append((user, message_id, a, b))
    await RatingService(engine, scale).record_many(events)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Choice),
            [
                {
                    "user_id": u,
                    "message_id": m,
                    "image_a_id": a,
                    "image_b_id": b,
                    "winner": "a",
                    "source": "reaction",
                }
                for u, m, a, b in stale
            ],
        )
    return messages
