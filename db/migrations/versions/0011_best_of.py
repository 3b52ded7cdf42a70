"""best-of-N: candidates per requested image (per job, and a guild's default), the candidates
the predictor passed over, and each candidate's predicted score

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows already there get the defaults, which the models then keep setting.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("best_of", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("best_of", existing_type=sa.Integer(), server_default=None)
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("passed_over", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("predicted", sa.Float(), nullable=True))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.alter_column("passed_over", existing_type=sa.Boolean(), server_default=None)
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("best_of", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.drop_column("best_of")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("predicted")
        batch_op.drop_column("passed_over")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("best_of")
