"""web home: pairs shown to one member on the web, the moderation audit log, the gallery's
index on a guild's jobs, a guild's own blocked terms

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dreamrate.db.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("comparison_posts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shown_to", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_guild_id_id", ["guild_id", "id"])
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("blocked_terms", dreamrate.db.types.JSONType, nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("actor_discord_id", sa.BigInteger(), nullable=False),
        sa.Column("actor_name", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("detail", dreamrate.db.types.JSONType, nullable=False),
        sa.Column("created_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_guild_id_id", ["guild_id", "id"])


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_guild_id_id")
    op.drop_table("audit_log")
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.drop_column("blocked_terms")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_guild_id_id")
    with op.batch_alter_table("comparison_posts", schema=None) as batch_op:
        batch_op.drop_column("shown_to")
