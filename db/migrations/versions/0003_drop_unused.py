"""drop what nothing reads: jobs.reply_message_id and jobs.params,
guild_settings.moderator_role_id, flags.resolved_by, and the 'import' rating event kind

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
KINDS = ("add", "remove", "backfill_add", "backfill_remove")


def _kinds(kinds: Sequence[str]) -> str:
    return "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("reply_message_id")
        batch_op.drop_column("params")
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.drop_column("moderator_role_id")
    with op.batch_alter_table("flags", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_flags_resolved_by_users"), type_="foreignkey")
        batch_op.drop_column("resolved_by")
    # Nothing ever logged an 'import' event; refuse them from now on.
    with op.batch_alter_table("rating_events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_rating_events_rating_event_kind"), type_="check")
        batch_op.create_check_constraint(op.f("ck_rating_events_rating_event_kind"), _kinds(KINDS))


def downgrade() -> None:
    with op.batch_alter_table("rating_events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_rating_events_rating_event_kind"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_rating_events_rating_event_kind"), _kinds((*KINDS, "import"))
        )
    with op.batch_alter_table("flags", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolved_by", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_flags_resolved_by_users"),
            "users",
            ["resolved_by"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("moderator_role_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        # Existing rows need a value; 0002's column has no server default, so drop it after.
        batch_op.add_column(
            sa.Column("params", JSON, nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(sa.Column("reply_message_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("params", existing_type=JSON, server_default=None)
