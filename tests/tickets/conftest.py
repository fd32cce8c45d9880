from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from ticket_clock import WallClock

from callcenter.store.db import make_engine
from callcenter.store.migrate import upgrade

# Parametrised over SQLite and a throwaway PostgreSQL cluster (skipped when it is not installed).
from callcenter.testing.postgres import database_url, postgres_cluster

__all__ = ["database_url", "postgres_cluster"]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> WallClock:
    return WallClock()
