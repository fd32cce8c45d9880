"""Queues and business-hours schedules managed in the admin console (config.yaml's stay provisioned).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callcenter.store.migrations.helpers import has_table

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A table made by create_all from the current models (tests, a start-up between revisions) stays.
    for table in ("managed_queue", "managed_schedule"):
        if has_table(table):
            continue
        op.create_table(
            table,
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("settings", sa.JSON(), nullable=False),
            sa.Column("updated_by", sa.String(length=64), nullable=True),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("updated_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )


def downgrade() -> None:
    op.drop_table("managed_schedule")
    op.drop_table("managed_queue")
