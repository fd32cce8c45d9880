"""PostgreSQL ranks like SQLite: the same BM25 (FTS5's formula and field weights) over its own
postings, the same rare/common pruning, and an index from an older version rebuilt at start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session
from test_kb_pruning import QUERIES, _corpus  # tests/kb is on sys.path
from test_kb_search import EXPECTED_TOP

from callcenter.kb import index as kbindex
from callcenter.kb import text as kbtext
from callcenter.kb.index import PostgresIndex
from callcenter.kb.io import load_sample_if_empty
from callcenter.kb.markdown import ArticleData
from callcenter.kb.models import KbArticle
from callcenter.kb.repo import KbRepo
from callcenter.store.db import make_engine
from callcenter.testing.postgres import PostgresCluster, test_backends


def _fill(repo: KbRepo, rows: list[KbArticle]) -> None:
    with Session(repo.engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.flush()
        for row in rows:
            repo._index(session, row)
        session.commit()
    repo.stats.invalidate()


@pytest.fixture
def both_repos(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[KbRepo, KbRepo]]:
    """The same knowledge base (the sample and 600 generated articles) on SQLite and on PostgreSQL."""
    if "postgresql" not in test_backends():
        pytest.skip("PostgreSQL left out by CALLCENTER_TEST_DATABASES")
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    repos = [
        KbRepo(make_engine(f"sqlite:///{tmp_path / 'kb.db'}")),
        KbRepo(make_engine(cluster.create_database())),
    ]
    for repo in repos:
        repo.ensure_schema()
        load_sample_if_empty(repo)
        _fill(repo, _corpus(600, seed=5))
    yield repos[0], repos[1]
    for repo in repos:
        repo.engine.dispose()


def test_postgresql_ranks_and_scores_like_sqlite(both_repos: tuple[KbRepo, KbRepo]) -> None:
    sqlite, postgres = both_repos
    questions = (
        [(lang, q) for lang, q, _ in EXPECTED_TOP] + [("en", q) for q in QUERIES] + [(None, "订单 order")]
    )
    for language, question in questions:
        want = sqlite.search(question, language=language, limit=8)
        got = postgres.search(question, language=language, limit=8)
        assert [h.slug for h in got] == [h.slug for h in want], question
        assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-9), question
        assert [h.confidence for h in got] == [h.confidence for h in want], question


@pytest.fixture
def pg_repo(request: pytest.FixtureRequest) -> Iterator[KbRepo]:
    if "postgresql" not in test_backends():
        pytest.skip("PostgreSQL left out by CALLCENTER_TEST_DATABASES")
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    repo = KbRepo(make_engine(cluster.create_database()))
    repo.ensure_schema()
    yield repo
    repo.engine.dispose()


def test_pruned_search_ranks_exactly_like_the_full_query(
    pg_repo: KbRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(pg_repo, _corpus(1500))
    ranked: list[tuple[list[str], bool]] = []
    rank = kbindex._PgRanker.rank

    def spy(self: Any, terms: list[str], limit: int, candidates_from: list[str] | None = None) -> Any:
        ranked.append((list(terms), candidates_from is not None))
        return rank(self, terms, limit, candidates_from)

    for language in ("en", None):
        for limit in (1, 5, 20):
            for query in QUERIES:
                with monkeypatch.context() as m:
                    m.setattr(kbindex._PgRanker, "rank", spy)
                    hits = pg_repo.search(query, language=language, limit=limit)
                with pg_repo._session() as session:  # no statistics given: no pruning
                    full = pg_repo.index.search(
                        session, kbtext.terms(query), language=language, statuses=("published",), limit=limit
                    )
                assert [h.article_id for h in hits] == [i for i, _ in full], query
                assert [h.score for h in hits] == pytest.approx([s for _, s in full]), query
                assert all(h.status == "published" and h.language in (language or h.language) for h in hits)
    # "cancel my order": the ~1200 articles saying only "order" were never scored
    cancel_order = [r for r in ranked if sorted(r[0]) == ["cancel", "order"]]
    assert cancel_order and all(pruned for _, pruned in cancel_order)


def test_an_index_of_the_tsvector_version_is_rebuilt_at_start(pg_repo: KbRepo) -> None:
    pg_repo.save_article(ArticleData("gift", "en", "Gift cards", "Buy gift cards online.\n"), author="t")
    with pg_repo.engine.begin() as conn:  # revision 0003's table, as an older version left it
        conn.execute(text("DROP TABLE kb_article_term, kb_article_fts"))
        conn.execute(
            text(
                "CREATE TABLE kb_article_fts (article_id integer PRIMARY KEY REFERENCES kb_article(id), "
                "title text NOT NULL, tags text NOT NULL, body text NOT NULL, document tsvector NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO kb_article_fts SELECT id, 'gift card', '', 'buy gift card onlin', "
                "to_tsvector('simple', 'gift card') FROM kb_article"
            )
        )
    restarted = KbRepo(pg_repo.engine)
    restarted.ensure_schema()
    assert [h.slug for h in restarted.search("gift cards", language="en")] == ["gift"]
    assert isinstance(restarted.index, PostgresIndex)
    with restarted._session() as session:
        assert restarted.index.doc_freq(session, ["gift", "card", "shoe"]) == {
            "gift": 1,
            "card": 1,
            "shoe": 0,
        }


def test_an_edit_replaces_the_articles_postings(pg_repo: KbRepo) -> None:
    pg_repo.save_article(ArticleData("a", "en", "Gift cards", "Buy gift cards online.\n"), author="t")
    pg_repo.save_article(ArticleData("a", "en", "Vouchers", "Buy vouchers in the shop.\n"), author="t")
    with pg_repo._session() as session:
        terms = session.execute(text("SELECT term FROM kb_article_term ORDER BY term")).scalars().all()
    assert terms == ["buy", "shop", "voucher"]
    assert pg_repo.search("gift card") == []
