"""image posts: further messages showing an image (/rate, the rating feed)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:03:05.049328
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dreamrate.db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "image_posts",
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("posted_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_posts_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_image_posts")),
    )
    with op.batch_alter_table("image_posts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_posts_image_id"), ["image_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("image_posts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_posts_image_id"))

    op.drop_table("image_posts")
