"""The moderation audit log: every moderator action, who took it, where, and on what."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dreamrate.db.models import AuditEntry
from dreamrate.db.types import utcnow

__all__ = ["AuditRow", "audit", "audit_log"]


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    actor_discord_id: int
    actor_name: str
    action: str
    target: str
    source: str
    detail: dict[str, Any]
    created_at: datetime


async def audit(
    engine: AsyncEngine,
    *,
    guild_id: int,
    actor_discord_id: int,
    actor_name: str,
    action: str,
    target: str = "",
    source: str = "web",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one action to ``guild_id``'s audit log."""
    async with engine.begin() as conn:
        await conn.execute(
            AuditEntry.__table__.insert().values(
                guild_id=guild_id,
                actor_discord_id=actor_discord_id,
                actor_name=actor_name[:100],
                action=action,
                target=target[:200],
                source=source,
                detail=detail or {},
                created_at=utcnow(),
            )
        )


async def audit_log(engine: AsyncEngine, guild_id: int, limit: int = 50) -> list[AuditRow]:
    """``guild_id``'s most recent actions, newest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(AuditEntry)
            .where(AuditEntry.guild_id == guild_id)
            .order_by(AuditEntry.id.desc())
            .limit(limit)
        )
        return [
            AuditRow(
                r.id,
                r.actor_discord_id,
                r.actor_name,
                r.action,
                r.target,
                r.source,
                dict(r.detail or {}),
                r.created_at,
            )
            for r in rows
        ]
