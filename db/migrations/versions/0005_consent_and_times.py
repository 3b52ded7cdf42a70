"""erase and opt-out stay final (tombstones, counted_since, baseline_pending); when a rating
was chosen (ratings.rated_at); one job per interaction (jobs.interaction_id); posts recorded before they are made
(pending_posts)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dreamrate.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_posts",
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_pending_posts_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_pending_posts")),
    )
    with op.batch_alter_table("pending_posts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pending_posts_image_id"), ["image_id"], unique=False)
    op.create_table(
        "reaction_tombstones",
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_reaction_tombstones_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "message_id", name=op.f("pk_reaction_tombstones")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("counted_since", dreamrate.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("baseline_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("baseline_pending", existing_type=sa.Boolean(), server_default=None)
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rated_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("interaction_id", sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint(op.f("uq_jobs_interaction_id"), ["interaction_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("uq_jobs_interaction_id"), type_="unique")
        batch_op.drop_column("interaction_id")
    with op.batch_alter_table("ratings", schema=None) as batch_op:
        batch_op.drop_column("rated_at")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("baseline_pending")
        batch_op.drop_column("counted_since")
    op.drop_table("reaction_tombstones")
    op.drop_table("pending_posts")
