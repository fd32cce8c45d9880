from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlmodel import SQLModel
from stepped_clock import Clock

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.auth.service import UserService
from callcenter.store.db import make_engine


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with small parameters: the same code path, ~1 ms instead of ~0.3 s per hash."""
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def users(tmp_path: Path, clock: Clock) -> Iterator[UserService]:
    engine = make_engine(f"sqlite:///{tmp_path / 'cc.db'}")
    SQLModel.metadata.create_all(engine)
    yield UserService(engine, now=clock, max_failed_logins=3, lockout=timedelta(minutes=10))
    engine.dispose()
