"""Ticket SLA: due times, first response, the resolution clock's pauses, the checker's state.

Tickets stored before this revision get no due times (nothing is raised for them) until their
priority changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from callcenter.store.migrations.helpers import has_column

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_DATES = ("first_response_due", "first_response_at", "resolution_due", "sla_paused_at")


def upgrade() -> None:
    # A ticket table made by create_all from the current models (tests, a start-up between revisions)
    # has the columns already: only what is missing is added.
    columns: list[sa.Column[Any]] = [sa.Column(name, sa.DateTime(), nullable=True) for name in _DATES] + [
        sa.Column("sla_paused_s", sa.Float(), nullable=False, server_default="0"),
        sa.Column("sla_fired", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("sla_next_at", sa.DateTime(), nullable=True),
    ]
    missing = [c for c in columns if not has_column("ticket", c.name)]
    if not missing:
        return
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        for column in missing:
            batch_op.add_column(column)
        if any(c.name == "sla_next_at" for c in missing):
            batch_op.create_index(batch_op.f("ix_ticket_sla_next_at"), ["sla_next_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_sla_next_at"))
        for name in ("sla_next_at", "sla_fired", "sla_paused_s", *reversed(_DATES)):
            batch_op.drop_column(name)
