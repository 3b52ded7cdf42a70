"""arena rounds: one prompt and seed on two models, posted blind; the feed's arena switch

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dreamrate.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "arena_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("left_job_id", sa.Integer(), nullable=False),
        sa.Column("right_job_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("closes_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["left_job_id"],
            ["jobs.id"],
            name=op.f("fk_arena_rounds_left_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["right_job_id"],
            ["jobs.id"],
            name=op.f("fk_arena_rounds_right_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arena_rounds")),
        sa.UniqueConstraint("message_id", name=op.f("uq_arena_rounds_message_id")),
    )
    with op.batch_alter_table("arena_rounds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_arena_rounds_left_job_id"), ["left_job_id"])
        batch_op.create_index(batch_op.f("ix_arena_rounds_right_job_id"), ["right_job_id"])
        batch_op.create_index(batch_op.f("ix_arena_rounds_status"), ["status"])
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feed_arena", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.drop_column("feed_arena")
    with op.batch_alter_table("arena_rounds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_arena_rounds_status"))
        batch_op.drop_index(batch_op.f("ix_arena_rounds_right_job_id"))
        batch_op.drop_index(batch_op.f("ix_arena_rounds_left_job_id"))
    op.drop_table("arena_rounds")
