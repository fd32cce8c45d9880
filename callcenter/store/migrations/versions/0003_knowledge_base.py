"""Knowledge base: articles and their versions, answer feedback, gaps; the full-text index per backend.

The index holds analysed text (stemmed English, jieba-cut Chinese) written by callcenter.kb; it is
created empty here and filled by ``KbRepo.ensure_schema`` (which rebuilds it whenever it is out of step).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 00:14:57.068525
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callcenter.store.migrations.helpers import has_table

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if not has_table("kb_article"):  # else made by KbRepo.ensure_schema (create_all) before this revision
        _create_tables()
    _create_index()


def _create_index() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS kb_article_fts USING fts5("
            "title, tags, body, tokenize = 'unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS kb_article_fts_vocab USING fts5vocab(kb_article_fts, 'row')"
        )
    elif op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE IF NOT EXISTS kb_article_fts ("
            "article_id integer PRIMARY KEY REFERENCES kb_article(id) ON DELETE CASCADE, "
            "title text NOT NULL, tags text NOT NULL, body text NOT NULL, document tsvector NOT NULL)"
        )
        op.execute(
            "CREATE INDEX IF NOT EXISTS ix_kb_article_fts_document ON kb_article_fts USING gin(document)"
        )


def _create_tables() -> None:
    op.create_table(
        "kb_article",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=128), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("helpful_count", sa.Integer(), nullable=False),
        sa.Column("not_helpful_count", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("kb_article", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kb_article_flagged"), ["flagged"], unique=False)
        batch_op.create_index(batch_op.f("ix_kb_article_language"), ["language"], unique=False)
        batch_op.create_index(batch_op.f("ix_kb_article_slug"), ["slug"], unique=True)
        batch_op.create_index(batch_op.f("ix_kb_article_status"), ["status"], unique=False)

    op.create_table(
        "kb_gap",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("example", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("language", "key", name="uq_kb_gap"),
    )
    with op.batch_alter_table("kb_gap", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kb_gap_language"), ["language"], unique=False)
        batch_op.create_index(batch_op.f("ix_kb_gap_last_seen"), ["last_seen"], unique=False)

    op.create_table(
        "kb_article_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["article_id"], ["kb_article.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("article_id", "version", name="uq_kb_article_version"),
    )
    with op.batch_alter_table("kb_article_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kb_article_version_article_id"), ["article_id"], unique=False)

    op.create_table(
        "kb_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(length=255), nullable=True),
        sa.Column("helpful", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["kb_article.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("article_id", "conversation_id", name="uq_kb_feedback"),
    )
    with op.batch_alter_table("kb_feedback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kb_feedback_article_id"), ["article_id"], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS kb_article_fts_vocab")
    op.execute("DROP TABLE IF EXISTS kb_article_fts")
    with op.batch_alter_table("kb_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kb_feedback_article_id"))

    op.drop_table("kb_feedback")
    with op.batch_alter_table("kb_article_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kb_article_version_article_id"))

    op.drop_table("kb_article_version")
    with op.batch_alter_table("kb_gap", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kb_gap_last_seen"))
        batch_op.drop_index(batch_op.f("ix_kb_gap_language"))

    op.drop_table("kb_gap")
    with op.batch_alter_table("kb_article", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kb_article_status"))
        batch_op.drop_index(batch_op.f("ix_kb_article_slug"))
        batch_op.drop_index(batch_op.f("ix_kb_article_language"))
        batch_op.drop_index(batch_op.f("ix_kb_article_flagged"))

    op.drop_table("kb_article")
