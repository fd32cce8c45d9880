"""Synchronous knowledge-base repository: articles with versions, search, feedback and gaps.

Used as is by the CLI and, through :class:`callcenter.kb.service.KbService`, from worker threads.
Every write to ``kb_article`` rewrites its index row in the same transaction.

Confidence of a hit (0-1, backend-independent, so one threshold serves SQLite and PostgreSQL): the share
of the question's information the article covers, Σ idf(t)·credit(t) / Σ idf(t) over the question's
terms, with idf = ln(1 + (N − df + 0.5) / (df + 0.5)) as in BM25. credit is 1 for a term in the
title, 0.8 in the tags, 0.5 in the body only (a passing mention: "opening hours" must not answer from
"open My Orders … 24 hours"), else 0. A term no article contains (df = 0) counts a quarter of its
idf: no article can answer that word, so it lowers confidence without vetoing the answer ("return my
shoes" still finds the returns article when no article says "shoes").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rapidfuzz import fuzz, process
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, func, select

from callcenter.core.errors import CallcenterError
from callcenter.kb import text as kbtext
from callcenter.kb.index import Fields, FtsIndex, index_for
from callcenter.kb.markdown import ArticleData, check_article, spoken_answer
from callcenter.kb.models import KbArticle, KbArticleVersion, KbFeedback, KbGap
from callcenter.kb.stats import StatsCache
from callcenter.store.db import utcnow

__all__ = ["GAP_SIMILARITY", "KbError", "KbRepo", "SearchHit", "article_data"]

GAP_SIMILARITY = 85  # rapidfuzz token_sort_ratio of gap keys at or above which two questions group
_GAP_CANDIDATES = 5000  # most recent gaps compared against a new question
_TABLES = [KbArticle.__table__, KbArticleVersion.__table__, KbFeedback.__table__, KbGap.__table__]  # type: ignore[attr-defined]


class KbError(CallcenterError):
    """A knowledge-base operation was refused (no such article, bad input)."""


@dataclass(frozen=True)
class SearchHit:
    article_id: int
    slug: str
    language: str
    title: str
    answer: str  # the first paragraph as plain text
    tags: tuple[str, ...]
    status: str
    score: float  # BM25 with the field weights (FTS5's on SQLite, the same formula on PostgreSQL)
    confidence: float  # 0-1, see the module docstring


def article_data(article: KbArticle) -> ArticleData:
    return ArticleData(
        slug=article.slug,
        language=article.language,
        title=article.title,
        body=article.body,
        tags=tuple(article.tags or ()),
        status=article.status,
    )


_OOV_WEIGHT = 0.25
_FIELD_CREDIT = (1.0, 0.8, 0.5)  # title, tags, body


def _credit(term: str, fields: Fields) -> float:
    return max((c for c, f in zip(_FIELD_CREDIT, fields, strict=True) if term in f), default=0.0)


def _idf(n_docs: int, df: int) -> float:
    return math.log(1 + (n_docs - df + 0.5) / (df + 0.5))


class KbRepo:
    def __init__(self, engine: Engine, *, flag_after: int = 3, stats: StatsCache | None = None) -> None:
        self.engine = engine
        self.flag_after = flag_after
        self.index: FtsIndex = index_for(engine)
        self.stats = stats or StatsCache()

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- schema --------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the KB tables and the index if missing; rebuild the index if it is out of step.

        Idempotent (safe on every start). Alembic revisions, once they exist, create the same objects.
        """
        SQLModel.metadata.create_all(self.engine, tables=_TABLES)
        with self.engine.begin() as conn:
            self.index.create(conn)
        with self._session() as session:
            articles = session.exec(select(func.count()).select_from(KbArticle)).one()
            if articles != self.index.count(session):
                self._reindex(session)
                session.commit()
        self.stats.invalidate()

    def reindex(self) -> int:
        """Rebuild the whole index (after changing the analyser); returns the number of articles."""
        with self._session() as session:
            n = self._reindex(session)
            session.commit()
        self.stats.invalidate()
        return n

    def _reindex(self, session: Session) -> int:
        self.index.clear(session)
        n = 0
        for article in session.exec(select(KbArticle)):
            self._index(session, article)
            n += 1
        return n

    def _index(self, session: Session, article: KbArticle) -> None:
        assert article.id is not None
        self.index.upsert(
            session,
            article.id,
            kbtext.analyse(article.title),
            kbtext.analyse(" ".join(article.tags or ())),
            kbtext.analyse(article.body),
        )

    # -- articles ------------------------------------------------------------------------------------

    def count_articles(self, *, language: str | None = None) -> int:
        with self._session() as session:
            stmt = select(func.count()).select_from(KbArticle)
            if language is not None:
                stmt = stmt.where(KbArticle.language == language)
            return int(session.exec(stmt).one())

    def get_article(self, key: int | str) -> KbArticle | None:
        """By id (an int or a string of digits) or by slug."""
        with self._session() as session:
            if isinstance(key, int) or key.isdigit():
                return session.get(KbArticle, int(key))
            return session.exec(select(KbArticle).where(KbArticle.slug == key)).first()

    def list_articles(self, *, language: str | None = None, flagged: bool | None = None) -> list[KbArticle]:
        with self._session() as session:
            stmt = select(KbArticle).order_by(col(KbArticle.language), col(KbArticle.slug))
            if language is not None:
                stmt = stmt.where(KbArticle.language == language)
            if flagged is not None:
                stmt = stmt.where(KbArticle.flagged == flagged)
            return list(session.exec(stmt))

    def page_articles(
        self,
        *,
        language: str | None = None,
        status: str | None = None,
        flagged: bool | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[KbArticle], int]:
        """One page of articles (by language, then slug) and how many match the filters in all."""
        with self._session() as session:
            stmt = select(KbArticle)
            count = select(func.count()).select_from(KbArticle)
            for column, value in ((KbArticle.language, language), (KbArticle.status, status)):
                if value is not None:
                    stmt, count = stmt.where(column == value), count.where(column == value)
            if flagged is not None:
                stmt, count = (
                    stmt.where(KbArticle.flagged == flagged),
                    count.where(KbArticle.flagged == flagged),
                )
            stmt = stmt.order_by(col(KbArticle.language), col(KbArticle.slug)).offset(offset).limit(limit)
            return list(session.exec(stmt)), int(session.exec(count).one())

    def versions(self, article_id: int) -> list[KbArticleVersion]:
        with self._session() as session:
            stmt = (
                select(KbArticleVersion)
                .where(KbArticleVersion.article_id == article_id)
                .order_by(col(KbArticleVersion.version))
            )
            return list(session.exec(stmt))

    def save_article(
        self, data: ArticleData, *, author: str, message: str | None = None
    ) -> tuple[KbArticle, bool]:
        """Create or update the article with ``data.slug``; returns (article, changed).

        An update that changes nothing adds no version. An edit clears ``flagged`` and restarts the
        helpful / not-helpful counts (they judge the text as it is now; the votes stay in kb_feedback).
        """
        check_article(data, data.slug)
        now = utcnow()
        with self._session() as session:
            article = session.exec(select(KbArticle).where(KbArticle.slug == data.slug)).first()
            if article is None:
                article = KbArticle(
                    slug=data.slug,
                    language=data.language,
                    title=data.title,
                    body=data.body,
                    tags=list(data.tags),
                    status=data.status,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
                session.add(article)
                session.flush()
            else:
                if article_data(article) == data:
                    return article, False
                article.language = data.language
                article.title, article.body, article.tags = data.title, data.body, list(data.tags)
                article.status = data.status
                article.version += 1
                article.updated_at = now
                article.flagged = False
                article.helpful_count = article.not_helpful_count = 0
                session.add(article)
                session.flush()
            assert article.id is not None
            session.add(
                KbArticleVersion(
                    article_id=article.id,
                    version=article.version,
                    author=author,
                    created_at=now,
                    title=data.title,
                    body=data.body,
                    tags=list(data.tags),
                    status=data.status,
                    message=message,
                )
            )
            self._index(session, article)
            try:
                session.commit()
            except IntegrityError:  # another writer saved the same slug or version first
                raise KbError(
                    f"article {data.slug!r} was changed by another writer at the same time"
                ) from None
            finally:
                self.stats.invalidate()
            return article, True

    # -- search --------------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        language: str | None = None,
        limit: int = 5,
        include_drafts: bool = False,
        max_terms: int | None = None,
    ) -> list[SearchHit]:
        """Best articles for ``query`` (language: 'en', 'en-US', 'zh-CN' …; None = any).

        ``max_terms``: for long texts (a transcript), search with only that many of its distinct terms,
        the most telling ones (fewest articles have them; terms no article has go last)."""
        terms = kbtext.terms(query)
        if not terms or limit <= 0:
            return []
        statuses = ("draft", "published") if include_drafts else ("published",)
        lang = kbtext.primary_language(language)
        with self._session() as session:
            stats = self.stats.get(
                terms,
                # The index mirrors kb_article; counting the table is cheap, counting an FTS5 table is a scan.
                lambda: int(session.exec(select(func.count()).select_from(KbArticle)).one()),
                lambda missing: self.index.doc_freq(session, missing),
                lambda: self.index.total_length(session),
            )
            if max_terms is not None and len(set(terms)) > max_terms:
                telling = sorted(set(terms), key=lambda t: (stats.df(t) == 0, stats.df(t), t))[:max_terms]
                terms = [t for t in terms if t in telling]
            ranked = self.index.search(
                session, terms, language=lang, statuses=statuses, limit=limit, stats=stats
            )
            if not ranked:
                return []
            ids = [article_id for article_id, _ in ranked]
            articles = {a.id: a for a in session.exec(select(KbArticle).where(col(KbArticle.id).in_(ids)))}
            doc_terms = self.index.doc_terms(session, ids)
        n_docs = max(stats.n_docs, 1)
        weights = {t: _idf(n_docs, stats.df(t)) * (1.0 if stats.df(t) else _OOV_WEIGHT) for t in set(terms)}
        total = sum(weights.values()) or 1.0
        hits = []
        for article_id, score in ranked:
            article = articles.get(article_id)
            if article is None:
                continue
            fields = doc_terms.get(article_id, (set(), set(), set()))
            covered = sum(w * _credit(t, fields) for t, w in weights.items())
            hits.append(
                SearchHit(
                    article_id=article_id,
                    slug=article.slug,
                    language=article.language,
                    title=article.title,
                    answer=spoken_answer(article.body),
                    tags=tuple(article.tags or ()),
                    status=article.status,
                    score=score,
                    confidence=round(covered / total, 4),
                )
            )
        return hits

    # -- feedback ------------------------------------------------------------------------------------

    def vote(
        self, article_id: int, helpful: bool, *, conversation_id: str | None = None, source: str = ""
    ) -> KbArticle:
        """Record a vote; a second vote in the same conversation replaces the first.

        The article is flagged once it has ``flag_after`` not-helpful votes and more of them than
        helpful ones.
        """
        with self._session() as session:
            article = session.get(KbArticle, article_id, with_for_update=True)
            if article is None:
                raise KbError(f"no article {article_id}")
            previous = None
            if conversation_id is not None:
                previous = session.exec(
                    select(KbFeedback).where(
                        KbFeedback.article_id == article_id, KbFeedback.conversation_id == conversation_id
                    )
                ).first()
            if previous is not None:
                if previous.helpful == helpful:
                    return article
                if previous.created_at >= article.updated_at:  # counted since the last edit: undo it
                    if previous.helpful:
                        article.helpful_count = max(article.helpful_count - 1, 0)
                    else:
                        article.not_helpful_count = max(article.not_helpful_count - 1, 0)
                previous.helpful, previous.source, previous.created_at = helpful, source, utcnow()
                session.add(previous)
            else:
                session.add(
                    KbFeedback(
                        article_id=article_id, conversation_id=conversation_id, helpful=helpful, source=source
                    )
                )
            if helpful:
                article.helpful_count += 1
            else:
                article.not_helpful_count += 1
            article.flagged = (
                article.not_helpful_count >= self.flag_after
                and article.not_helpful_count > article.helpful_count
            )
            session.add(article)
            session.commit()
            return article

    # -- gaps ----------------------------------------------------------------------------------------

    def record_gap(
        self, question: str, language: str, *, reason: str = "no_answer", now: datetime | None = None
    ) -> KbGap | None:
        """Count an unanswered question in its group (same key, or a similar one); None if empty."""
        lang = kbtext.primary_language(language) or "und"
        key = kbtext.gap_key(question)[:500]
        if not key:
            return None
        when = now or utcnow()
        for _ in range(3):  # a concurrent writer may create the same group first
            with self._session() as session:
                recent = session.exec(
                    select(KbGap.id, KbGap.key)
                    .where(KbGap.language == lang)
                    .order_by(col(KbGap.last_seen).desc())
                    .limit(_GAP_CANDIDATES)
                ).all()
                gap_id = next((gid for gid, k in recent if k == key), None)
                if gap_id is None and recent:
                    best = process.extractOne(
                        key, [k for _, k in recent], scorer=fuzz.token_sort_ratio, score_cutoff=GAP_SIMILARITY
                    )
                    if best is not None:
                        gap_id = recent[best[2]][0]
                gap = session.get(KbGap, gap_id) if gap_id is not None else None
                if gap is None:
                    gap = KbGap(language=lang, key=key, example=question.strip(), count=0, first_seen=when)
                gap.count += 1
                gap.last_seen = when if gap.id is None else max(gap.last_seen, when)
                gap.reasons = {**(gap.reasons or {}), reason: (gap.reasons or {}).get(reason, 0) + 1}
                session.add(gap)
                try:
                    session.commit()
                except IntegrityError:
                    continue
                return gap
        raise KbError(f"could not record the gap {question!r}: too many concurrent writers")

    def gaps(self, *, language: str | None = None, limit: int = 50) -> list[KbGap]:
        """Most asked first, then most recent."""
        with self._session() as session:
            stmt = select(KbGap).order_by(col(KbGap.count).desc(), col(KbGap.last_seen).desc()).limit(limit)
            lang = kbtext.primary_language(language)
            if lang is not None:
                stmt = stmt.where(KbGap.language == lang)
            return list(session.exec(stmt))

    def delete_gaps(self, ids: Iterable[int]) -> int:
        """Forget gaps an editor has dealt with; returns how many went."""
        id_list = list(ids)
        if not id_list:
            return 0
        with self._session() as session:
            gone = 0
            for gap in session.exec(select(KbGap).where(col(KbGap.id).in_(id_list))):
                session.delete(gap)
                gone += 1
            session.commit()
            return gone
