"""Knowledge-base fixtures: a repository on each backend (SQLite file, throwaway PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callcenter.kb.io import load_sample_if_empty
from callcenter.kb.repo import KbRepo
from callcenter.store.db import make_engine
from callcenter.testing.postgres import database_url, postgres_cluster

__all__ = ["database_url", "empty_repo", "empty_repo_factory", "postgres_cluster", "sample_repo"]


@pytest.fixture
def empty_repo(database_url: str) -> Iterator[KbRepo]:
    engine = make_engine(database_url)
    repo = KbRepo(engine)
    repo.ensure_schema()
    yield repo
    engine.dispose()


@pytest.fixture
def sample_repo(empty_repo: KbRepo) -> KbRepo:
    assert load_sample_if_empty(empty_repo) == 20
    return empty_repo


@pytest.fixture
def empty_repo_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KbRepo]:
    """A second, empty SQLite knowledge base (e.g. the target of an export/import round trip)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('second') / 'kb.db'}")
    repo = KbRepo(engine)
    repo.ensure_schema()
    yield repo
    engine.dispose()
