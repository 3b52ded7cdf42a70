"""A member's control over their data: opt out, opt in, erase, export.

``/privacy`` and the web home's own page both call these, so the same promises hold from
either side. What follows an opt-in or an erase is written here too: the member's
reactions still on Discord must never count, so their next baseline is marked
(``baseline_pending``) and the bot's reaction recorder, which watches for it, takes it
with its next full pass (:meth:`dreamrate.bot.reactions.ReactionRecorder.watch_baselines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import (
    Choice,
    ChoiceEvent,
    ComparisonPost,
    Flag,
    Image,
    Job,
    Rating,
    RatingEvent,
    ReactionTombstone,
    User,
)
from dreamrate.db.types import utcnow
from dreamrate.db.users import dialect_insert, ensure_user

__all__ = ["Erased", "erase", "export_mine", "set_opted_out"]


async def set_opted_out(
    engine: AsyncEngine, discord_id: int, opted_out: bool, *, name: str = ""
) -> bool:
    """Stop (or resume) recording the member's ratings; existing ones stay unless erased.
    Returns whether anything changed.

    Opting back in counts only what the member does afterwards: reactions the bot received
    before (or that sat on Discord while they were out) never become ratings.
    """
    await ensure_user(engine, discord_id, name)
    values: dict[str, Any] = {"opted_out": opted_out, "updated_at": utcnow()}
    if not opted_out:
        values |= {"counted_since": utcnow(), "baseline_pending": True}
    async with engine.begin() as conn:
        # Only a change counts: opting in again while in must not bury fresh reactions.
        changed = await conn.execute(
            update(User)
            .where(User.discord_id == discord_id, User.opted_out.is_(not opted_out))
            .values(**values)
        )
    return bool(changed.rowcount)


@dataclass(frozen=True, slots=True)
class Erased:
    """What ``/privacy erase`` deleted."""

    ratings: int
    events: int
    reports: int
    choices: int = 0

    def __str__(self) -> str:
        return (
            f"Erased {self.ratings} rating(s), {self.choices} choice(s) between images, "
            f"{self.events} reaction event(s) and {self.reports} report(s) you made. Your reactions still on Discord will never "
            "count and the images you made so far stay out of every dataset; what you rate "
            "from now on counts like anyone's (or use /privacy optout)."
        )


async def erase(engine: AsyncEngine, discord_id: int) -> Erased:
    """Delete the member's ratings, rating events and the reports they raised, for good.

    The messages they had reacted to are tombstoned (their reactions there, still on
    Discord, never become ratings), and the next full backfill takes a baseline of any
    others. Only reactions the member adds afterwards count.
    """
    now = utcnow()
    async with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as conn:
        # The member's row is locked first, as recording locks it (PostgreSQL; SQLite's
        # IMMEDIATE transaction is one writer already): a rating being recorded now either
        # commits before this erase deletes it or waits and sees the erase.
        user_id = (
            await conn.execute(
                select(User.id).where(User.discord_id == discord_id).with_for_update()
            )
        ).scalar_one_or_none()
        if user_id is None:
            return Erased(0, 0, 0)
        reacted = (
            await conn.execute(
                select(RatingEvent.message_id)
                .where(
                    RatingEvent.discord_user_id == discord_id, RatingEvent.message_id.is_not(None)
                )
                .union(
                    select(ChoiceEvent.message_id).where(ChoiceEvent.discord_user_id == discord_id)
                )
            )
        ).scalars()
        graves = [{"user_id": user_id, "message_id": m, "created_at": now} for m in reacted]
        if graves:
            await conn.execute(
                dialect_insert(engine)(ReactionTombstone).on_conflict_do_nothing(
                    index_elements=["user_id", "message_id"]
                ),
                graves,
            )
        ratings = await conn.execute(delete(Rating).where(Rating.user_id == user_id))
        events = await conn.execute(
            delete(RatingEvent).where(RatingEvent.discord_user_id == discord_id)
        )
        reports = await conn.execute(delete(Flag).where(Flag.user_id == user_id))
        choices = await conn.execute(delete(Choice).where(Choice.user_id == user_id))
        choice_events = await conn.execute(
            delete(ChoiceEvent).where(ChoiceEvent.discord_user_id == discord_id)
        )
        # The pairs the web home showed them: no longer linked to them.
        await conn.execute(
            update(ComparisonPost)
            .where(ComparisonPost.shown_to == discord_id)
            .values(shown_to=None)
        )
        await conn.execute(
            update(User)
            .where(User.id == user_id)
            .values(erased_at=now, counted_since=now, baseline_pending=True, updated_at=now)
        )
        return Erased(
            ratings.rowcount or 0,
            (events.rowcount or 0) + (choice_events.rowcount or 0),
            reports.rowcount or 0,
            choices.rowcount or 0,
        )


async def export_mine(engine: AsyncEngine, discord_id: int) -> dict[str, Any]:
    """Everything dreamrate holds about the member, as JSON-ready data."""
    async with engine.connect() as conn:
        user = (await conn.execute(select(User).where(User.discord_id == discord_id))).one_or_none()
        if user is None:
            return {"discord_id": str(discord_id), "ratings": [], "choices": [], "jobs": []}
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
        choices = (
            await conn.execute(
                select(
                    Choice.message_id,
                    Choice.image_a_id,
                    Choice.image_b_id,
                    Choice.winner,
                    Choice.updated_at,
                )
                .where(Choice.user_id == user.id)
                .order_by(Choice.updated_at)
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
        "choices": [
            {
                "message_id": str(c.message_id),
                "left_image_id": c.image_a_id,
                "right_image_id": c.image_b_id,
                "winner": c.winner,
                "updated_at": c.updated_at.isoformat(),
            }
            for c in choices
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
