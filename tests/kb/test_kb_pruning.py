"""Search speed-ups keep the results: the pruned SQLite search returns exactly the full query's ranking,
and cached index statistics follow edits (at once in this process, after the TTL from another)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from callcenter.core.clock import FakeClock
from callcenter.kb import text as kbtext
from callcenter.kb.index import SqliteIndex
from callcenter.kb.markdown import ArticleData
from callcenter.kb.models import KbArticle
from callcenter.kb.repo import KbRepo
from callcenter.kb.stats import StatsCache
from callcenter.store.db import make_engine

FILLER = "parcel shipping address account email phone store delivery courier box label week day".split()


def _corpus(n: int, seed: int = 3) -> list[KbArticle]:
    """'order' in ~80 % of the articles, 'refund' in ~40 %, 'cancel' and 'voucher' in a few."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(20, 60))
        if rng.random() < 0.8:
            words += ["order"] * rng.randint(1, 3)
        if rng.random() < 0.4:
            words.append("refund")
        if i % 60 == 0:
            words += ["cancel"] * rng.randint(1, 2)
        if i % 97 == 0:
            words.append("voucher")
        rng.shuffle(words)
        title = " ".join(rng.sample(FILLER, 3) + (["cancel"] if i % 120 == 0 else []))
        language, status = (
            ("zh", "published") if i % 10 == 9 else ("en", "draft" if i % 13 == 0 else "published")
        )
        rows.append(
            KbArticle(slug=f"a{i}", language=language, title=title, body=" ".join(words), status=status)
        )
    return rows


@pytest.fixture
def big_repo(tmp_path: Path) -> Iterator[KbRepo]:
    engine = make_engine(f"sqlite:///{tmp_path / 'kb.db'}")
    repo = KbRepo(engine)
    repo.ensure_schema()
    rows = _corpus(1500)
    with Session(engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.flush()
        for row in rows:
            repo._index(session, row)
        session.commit()
    repo.stats.invalidate()
    yield repo
    engine.dispose()


QUERIES = [
    "cancel my order",
    "cancel order refund",
    "refund for my order",
    "voucher order",
    "order",
    "cancel",
    "voucher refund cancel order",
    "order shoes",  # 'shoe' is in no article
]


@pytest.mark.parametrize("language", ["en", None])
@pytest.mark.parametrize("limit", [1, 5, 20])
def test_pruned_search_ranks_exactly_like_the_full_query(
    big_repo: KbRepo, language: str | None, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = big_repo.index
    assert isinstance(index, SqliteIndex)
    matches: list[str] = []
    rank = index._rank

    def spy_rank(session: Session, match: str, *args: Any) -> list[tuple[int, float]]:
        matches.append(match)
        return rank(session, match, *args)

    for query in QUERIES:
        terms = kbtext.terms(query)
        with monkeypatch.context() as spy:
            spy.setattr(index, "_rank", spy_rank)
            hits = big_repo.search(query, language=language, limit=limit)
        with big_repo._session() as session:
            full = index.search(session, terms, language=language, statuses=("published",), limit=limit)
        assert [h.article_id for h in hits] == [i for i, _ in full], query
        assert [h.score for h in hits] == pytest.approx([s for _, s in full]), query
        assert all(h.status == "published" and (language is None or h.language == language) for h in hits)
    # The common words were skipped where the rare ones decided: "cancel my order" never ran the
    # full OR query (which scores the ~1200 articles that say "order").
    assert '"cancel" OR "order"' not in matches and '("cancel") AND ("order")' in matches


def test_an_edit_is_counted_at_once_and_another_writer_after_the_ttl(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'kb.db'}")
    clock = FakeClock()
    repo = KbRepo(engine, stats=StatsCache(ttl_s=30, clock=clock))
    other = KbRepo(engine)  # another server process on the same database
    repo.ensure_schema()
    for i in range(4):
        repo.save_article(ArticleData(f"f{i}", "en", f"Filler {i}", "Nothing here.\n"), author="t")
    repo.save_article(ArticleData("v", "en", "Vouchers", "Buy vouchers and gift cards.\n"), author="t")

    def confidence(question: str) -> float:
        hits = repo.search(question, language="en", limit=1)
        return hits[0].confidence if hits else 0.0

    before = confidence("voucher gift")
    repo.save_article(ArticleData("g", "en", "Gift wrap", "We wrap gifts.\n"), author="t")
    after_own_edit = confidence("voucher gift")
    # 'gift' (only in the body of 'v') became commoner: it tells less, so missing its title counts less
    assert after_own_edit > before

    for i in range(6):
        other.save_article(ArticleData(f"o{i}", "en", f"Gift {i}", "Gift ideas.\n"), author="t")
    assert confidence("voucher gift") == after_own_edit  # cached: the other process is not seen yet
    clock.advance(31)
    assert confidence("voucher gift") > after_own_edit
    engine.dispose()


def test_filtered_out_best_matches_do_not_hide_the_articles_that_pass(empty_repo_factory: KbRepo) -> None:
    repo = empty_repo_factory
    rows = [
        KbArticle(
            slug=f"zh{i}", language="zh", title="iPhone 维修", body="iPhone iPhone 屏幕", status="published"
        )
        for i in range(40)
    ] + [
        KbArticle(slug=f"draft{i}", language="en", title="iPhone", body="iPhone repair", status="draft")
        for i in range(40)
    ]
    rows += [
        KbArticle(
            slug=f"en{i}",
            language="en",
            title=f"Screens {i}",
            body="Phones such as the iPhone.",
            status="published",
        )
        for i in range(3)
    ]
    with Session(repo.engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.flush()
        for row in rows:
            repo._index(session, row)
        session.commit()
    repo.stats.invalidate()
    hits = repo.search("iphone", language="en", limit=5)
    assert sorted(h.slug for h in hits) == ["en0", "en1", "en2"]  # 80 better matches filtered out
    assert {h.language for h in repo.search("iphone", limit=5)} == {"zh"}
    assert len(repo.search("iphone", language="en", limit=50, include_drafts=True)) == 43


def test_the_cached_total_length_is_read_with_the_count_and_dropped_with_it() -> None:
    clock = FakeClock()
    cache = StatsCache(ttl_s=30, clock=clock)
    lengths = iter([100, 150, 170])

    def get() -> int | None:
        return cache.get(["a"], lambda: 10, lambda missing: {"a": 1}, lambda: next(lengths)).total_len

    assert get() == 100 and get() == 100  # PostgreSQL's average length: not a query per search
    clock.advance(31)
    assert get() == 150  # another process's edits are seen after the TTL
    cache.invalidate()
    assert get() == 170  # this process's edits at once
