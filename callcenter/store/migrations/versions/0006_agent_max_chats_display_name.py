"""Agents' maximum concurrent chats and display name.

Existing agents get neither: ``max_chats`` NULL follows ``routing.default_max_chats``, and no display
name shows the username.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callcenter.store.migrations.helpers import has_column

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Guarded like 0002: a database made by create_all with the newer model has the columns already.
    missing = [name for name in ("max_chats", "display_name") if not has_column("agent", name)]
    if not missing:
        return
    with op.batch_alter_table("agent") as batch_op:
        if "max_chats" in missing:
            batch_op.add_column(sa.Column("max_chats", sa.Integer(), nullable=True))
        if "display_name" in missing:
            batch_op.add_column(sa.Column("display_name", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent") as batch_op:
        batch_op.drop_column("display_name")
        batch_op.drop_column("max_chats")
