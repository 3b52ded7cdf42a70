"""pairwise choices: comparison posts, the append-only choice log and current choices; the
feed's share of comparisons; pending posts of two images

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dreamrate.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "comparison_posts",
        sa.Column("message_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("image_a_id", sa.Integer(), nullable=False),
        sa.Column("image_b_id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("posted_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_a_id"],
            ["images.id"],
            name=op.f("fk_comparison_posts_image_a_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_b_id"],
            ["images.id"],
            name=op.f("fk_comparison_posts_image_b_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_comparison_posts")),
    )
    with op.batch_alter_table("comparison_posts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_comparison_posts_image_a_id"), ["image_a_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_comparison_posts_image_b_id"), ["image_b_id"], unique=False
        )

    op.create_table(
        "choice_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "add",
                "remove",
                "backfill_add",
                "backfill_remove",
                name="choice_event_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("discord_user_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("emoji", sa.String(length=100), nullable=False),
        sa.Column("winner", sa.String(length=8), nullable=False),
        sa.Column("received_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["comparison_posts.message_id"],
            name=op.f("fk_choice_events_message_id_comparison_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_choice_events_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_choice_events")),
    )
    with op.batch_alter_table("choice_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_choice_events_message_user", ["message_id", "discord_user_id"], unique=False
        )
        batch_op.create_index("ix_choice_events_discord_user_id", ["discord_user_id"], unique=False)

    op.create_table(
        "choices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("image_a_id", sa.Integer(), nullable=False),
        sa.Column("image_b_id", sa.Integer(), nullable=False),
        sa.Column("winner", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("chosen_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dreamrate.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("winner IN ('a', 'b', 'tie')", name=op.f("ck_choices_winner_known")),
        sa.ForeignKeyConstraint(
            ["image_a_id"],
            ["images.id"],
            name=op.f("fk_choices_image_a_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_b_id"],
            ["images.id"],
            name=op.f("fk_choices_image_b_id_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["comparison_posts.message_id"],
            name=op.f("fk_choices_message_id_comparison_posts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_choices_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_choices")),
        sa.UniqueConstraint("user_id", "message_id", name="uq_choices_user_message"),
    )
    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_choices_message_id"), ["message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_choices_image_a_id"), ["image_a_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_choices_image_b_id"), ["image_b_id"], unique=False)

    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feed_compare_percent", sa.Integer(), nullable=True))

    with op.batch_alter_table("pending_posts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("other_image_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_pending_posts_other_image_id_images"),
            "images",
            ["other_image_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("pending_posts", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_pending_posts_other_image_id_images"), type_="foreignkey"
        )
        batch_op.drop_column("other_image_id")

    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.drop_column("feed_compare_percent")

    with op.batch_alter_table("choices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_choices_image_b_id"))
        batch_op.drop_index(batch_op.f("ix_choices_image_a_id"))
        batch_op.drop_index(batch_op.f("ix_choices_message_id"))

    op.drop_table("choices")
    with op.batch_alter_table("choice_events", schema=None) as batch_op:
        batch_op.drop_index("ix_choice_events_discord_user_id")
        batch_op.drop_index("ix_choice_events_message_user")

    op.drop_table("choice_events")
    with op.batch_alter_table("comparison_posts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comparison_posts_image_b_id"))
        batch_op.drop_index(batch_op.f("ix_comparison_posts_image_a_id"))

    op.drop_table("comparison_posts")
