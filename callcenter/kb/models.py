"""Knowledge-base tables: articles with every edit kept, answer feedback, and unanswered questions.

The full-text index is not a model: it is a backend-specific table (FTS5 on SQLite, a tsvector table on
PostgreSQL) made by :mod:`callcenter.kb.index` and kept in step with ``kb_article`` by the repository,
in the same transaction as each edit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, Column, ForeignKey, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from callcenter.store.db import UTCDateTime, utcnow

__all__ = ["ARTICLE_STATUSES", "ArticleStatus", "KbArticle", "KbArticleVersion", "KbFeedback", "KbGap"]

ArticleStatus = Literal["draft", "published"]
ARTICLE_STATUSES: tuple[str, ...] = ("draft", "published")


class KbArticle(SQLModel, table=True):
    __tablename__ = "kb_article"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, index=True, max_length=128, description="stable key for import/export")
    language: str = Field(index=True, max_length=16, description="primary subtag: en, zh")
    title: str = Field(max_length=300)
    body: str = Field(sa_type=Text, description="Markdown; its first paragraph is the spoken answer")
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    status: str = Field(default="draft", max_length=16, index=True, description="draft or published")
    version: int = Field(default=1, description="number of the newest KbArticleVersion")
    helpful_count: int = 0
    not_helpful_count: int = 0
    flagged: bool = Field(default=False, index=True, description="voted not helpful too often")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class KbArticleVersion(SQLModel, table=True):
    """One row per edit, never rewritten: the article as it was after that edit."""

    __tablename__ = "kb_article_version"
    __table_args__ = (UniqueConstraint("article_id", "version", name="uq_kb_article_version"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(
        sa_column=Column(Integer, ForeignKey("kb_article.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    version: int
    author: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    title: str = Field(max_length=300)
    body: str = Field(sa_type=Text)
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    status: str = Field(max_length=16)
    message: str | None = Field(default=None, sa_type=Text)


class KbFeedback(SQLModel, table=True):
    """Was this answer helpful? One vote per article and conversation (a new vote replaces it)."""

    __tablename__ = "kb_feedback"
    __table_args__ = (UniqueConstraint("article_id", "conversation_id", name="uq_kb_feedback"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(
        sa_column=Column(Integer, ForeignKey("kb_article.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    conversation_id: str | None = Field(default=None, max_length=255, description="None: anonymous")
    helpful: bool
    source: str = Field(default="", max_length=32, description="ivr, chat, agent, web …")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class KbGap(SQLModel, table=True):
    """Questions nobody answered, grouped: editors read these to know which articles to write."""

    __tablename__ = "kb_gap"
    __table_args__ = (UniqueConstraint("language", "key", name="uq_kb_gap"),)

    id: int | None = Field(default=None, primary_key=True)
    language: str = Field(max_length=16, index=True)
    key: str = Field(max_length=500, description="normalised question: distinct stemmed terms, sorted")
    example: str = Field(sa_type=Text, description="the first question asked in this group")
    count: int = 1
    first_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    reasons: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSON, description="reason → count: no_answer, handoff …"
    )
