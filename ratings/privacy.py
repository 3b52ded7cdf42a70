"""A member's control over their data: opt out, opt in, erase, export."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import Image, Job, Rating, RatingEvent, User
from dreamrate.db.types import utcnow
from dreamrate.db.users import set_user_flags

__all__ = ["erase", "export_mine", "set_opted_out"]


async def set_opted_out(
    engine: AsyncEngine, discord_id: int, opted_out: bool, *, name: str = ""
) -> None:
    """Stop (or resume) recording the member's ratings; existing ones stay unless erased."""
    await set_user_flags(engine, discord_id, name=name, opted_out=opted_out)


async def erase(engine: AsyncEngine, discord_id: int) -> int:
    """Delete every rating and rating event of the member; they never reach a dataset again.

    Returns the number of current ratings deleted.
    """
    async with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
        user_id = (
            await conn.execute(select(User.id).where(User.discord_id == discord_id))
        ).scalar_one_or_none()
        if user_id is None:
            return 0
        deleted = await conn.execute(delete(Rating).where(Rating.user_id == user_id))
        await conn.execute(delete(RatingEvent).where(RatingEvent.discord_user_id == discord_id))
        await conn.execute(
            update(User).where(User.id == user_id).values(erased_at=utcnow(), updated_at=utcnow())
        )
        return deleted.rowcount or 0


async def export_mine(engine: AsyncEngine, discord_id: int) -> dict[str, Any]:
    """Everything dreamrate holds about the member, as JSON-ready data."""
    async with engine.connect() as conn:
        user = (await conn.execute(select(User).where(User.discord_id == discord_id))).one_or_none()
        if user is None:
            return {"discord_id": str(discord_id), "ratings": [], "jobs": []}
        ratings = (
            await conn.execute(
                select(
                    Rating.image_id,
                    Image.discord_message_id,
                    Rating.value,
                    Rating.scale,
                    Rating.updated_at,
                )
                .join(Image, Image.id == Rating.image_id)
                .where(Rating.user_id == user.id)
                .order_by(Rating.updated_at)
            )
        ).all()
        jobs = (
            await conn.execute(
                select(
                    Job.id,
                    Job.prompt,
                    Job.negative_prompt,
                    Job.seed,
                    Job.width,
                    Job.height,
                    Job.steps,
                    Job.status,
                    Job.created_at,
                )
                .where(Job.requester_id == user.id)
                .order_by(Job.id)
            )
        ).all()
    return {
        "discord_id": str(discord_id),
        "name": user.name,
        "opted_out": user.opted_out,
        "banned": user.banned,
        "erased_at": user.erased_at.isoformat() if user.erased_at else None,
        "ratings": [
            {
                "image_id": r.image_id,
                "message_id": None if r.discord_message_id is None else str(r.discord_message_id),
                "value": r.value,
                "scale": r.scale,
                "updated_at": r.updated_at.isoformat(),
            }
            for r in ratings
        ],
        "jobs": [
            {
                "job_id": j.id,
                "prompt": j.prompt,
                "negative_prompt": j.negative_prompt,
                "seed": j.seed,
                "size": f"{j.width}x{j.height}",
                "steps": j.steps,
                "status": j.status.value,
                "created_at": j.created_at.isoformat(),
            }
            for j in jobs
        ],
    }
