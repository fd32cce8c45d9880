"""Call records: the wrap-up code the agent picked after the call and their note.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callcenter.store.migrations.helpers import has_column

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A callrecord table made by create_all from the current models has the columns already.
    columns = [
        sa.Column("wrap_up_code", sa.String(length=32), nullable=True),
        sa.Column("wrap_up_note", sa.String(length=2000), nullable=True),
    ]
    missing = [c for c in columns if not has_column("callrecord", c.name)]
    if not missing:
        return
    with op.batch_alter_table("callrecord", schema=None) as batch_op:
        for column in missing:
            batch_op.add_column(column)
        if any(c.name == "wrap_up_code" for c in missing):
            batch_op.create_index(batch_op.f("ix_callrecord_wrap_up_code"), ["wrap_up_code"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("callrecord", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_callrecord_wrap_up_code"))
        batch_op.drop_column("wrap_up_note")
        batch_op.drop_column("wrap_up_code")
