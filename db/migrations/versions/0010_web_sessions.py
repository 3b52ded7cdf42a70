"""web home: sessions kept in the database, so logging out holds in every process and
across restarts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 12:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dreamrate.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("discord_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_web_sessions_discord_id", ["discord_id"])


def downgrade() -> None:
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_web_sessions_discord_id")
    op.drop_table("web_sessions")
