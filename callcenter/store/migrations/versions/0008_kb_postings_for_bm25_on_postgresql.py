"""Knowledge base on PostgreSQL: an inverted index (postings) ranked by BM25 instead of a tsvector.

``kb_article_fts`` loses its tsvector (and GIN index) and gains each article's length in terms;
``kb_article_term`` holds one row per (term, article) with the term's count per field. The index is
left empty: ``KbRepo.ensure_schema`` (every start) sees it out of step with ``kb_article`` and rebuilds
it from the articles. Nothing changes on SQLite (FTS5 ranks by BM25 itself).

Revision ID: 0008
Revises: 0006 (0007 was never used)
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

from callcenter.store.migrations.helpers import has_column, has_table

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # A table already in the new shape (made by ensure_schema of this version) stays as it is.
    if has_table("kb_article_fts") and has_column("kb_article_fts", "document"):
        op.execute("DROP TABLE kb_article_fts")
    op.execute(
        "CREATE TABLE IF NOT EXISTS kb_article_fts ("
        "article_id integer PRIMARY KEY REFERENCES kb_article(id) ON DELETE CASCADE, "
        "title text NOT NULL, tags text NOT NULL, body text NOT NULL, length integer NOT NULL)"
    )
    op.execute(
        "CREATE TABLE IF NOT EXISTS kb_article_term ("
        "term text NOT NULL, article_id integer NOT NULL, title_tf smallint NOT NULL, "
        "tags_tf smallint NOT NULL, body_tf smallint NOT NULL, length integer NOT NULL, "
        "CONSTRAINT pk_kb_article_term PRIMARY KEY (term, article_id) "
        "INCLUDE (title_tf, tags_tf, body_tf, length))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE IF EXISTS kb_article_term")
    op.execute("DROP TABLE IF EXISTS kb_article_fts")
    op.execute(  # revision 0003's shape, empty: the older code rebuilds it at start
        "CREATE TABLE kb_article_fts ("
        "article_id integer PRIMARY KEY REFERENCES kb_article(id) ON DELETE CASCADE, "
        "title text NOT NULL, tags text NOT NULL, body text NOT NULL, document tsvector NOT NULL)"
    )
    op.execute("CREATE INDEX ix_kb_article_fts_document ON kb_article_fts USING gin(document)")
