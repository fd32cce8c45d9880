"""Baseline: the tables ``create_all`` made before Alembic (agents, call records, flow versions).

A database created that way already has some or all of them: only the missing ones are created, rows
are kept, and the database is then stamped with this revision like any other.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callcenter.store.migrations.helpers import has_table

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if not has_table("agent"):
        op.create_table(
            "agent",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("username", sa.String(length=64), nullable=False),
            sa.Column("realm", sa.String(length=128), nullable=False),
            sa.Column("ha1_md5", sa.String(length=32), nullable=False),
            sa.Column("ha1_sha256", sa.String(length=64), nullable=False),
            sa.Column("skills", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_agent_username", "agent", ["username"], unique=True)

    if not has_table("callrecord"):
        op.create_table(
            "callrecord",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("sip_call_id", sa.String(length=255), nullable=False),
            sa.Column("from_uri", sa.String(), nullable=False),
            sa.Column("to_uri", sa.String(), nullable=False),
            sa.Column("started_at", sa.DateTime(), nullable=False),
            sa.Column("answered_at", sa.DateTime(), nullable=True),
            sa.Column("ended_at", sa.DateTime(), nullable=True),
            sa.Column("hangup_by", sa.String(length=16), nullable=True),
            sa.Column("disposition", sa.String(length=64), nullable=True),
            sa.Column("extra", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_callrecord_sip_call_id", "callrecord", ["sip_call_id"], unique=False)
        op.create_index("ix_callrecord_started_at", "callrecord", ["started_at"], unique=False)

    if not has_table("flow_version"):
        op.create_table(
            "flow_version",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("flow_id", sa.String(length=128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("yaml", sa.Text(), nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("author", sa.String(length=128), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.Column("message", sa.Text(), nullable=True),
            sa.Column("diff", sa.Text(), nullable=False),
            sa.Column("source", sa.String(length=16), nullable=False),
            sa.Column("rolled_back_from", sa.Integer(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("flow_id", "version", name="uq_flow_version"),
        )
        op.create_index("ix_flow_version_flow_id", "flow_version", ["flow_id"], unique=False)


def downgrade() -> None:
    op.drop_table("flow_version")
    op.drop_table("callrecord")
    op.drop_table("agent")
