from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callcenter.core.config import load_settings
from callcenter.store import AgentExistsError, InvalidAgentError, Store, agent_public

PASSWORD = "correct horse battery staple"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'cc.db'}")
    s.create_all()
    return s


def test_sqlite_file_is_wal_with_foreign_keys_and_normal_sync(store: Store, tmp_path: Path) -> None:
    store.add_agent("alice", PASSWORD, "callcenter", {})
    raw = sqlite3.connect(tmp_path / "cc.db")
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persistent in the file
    with store.engine.connect() as conn:  # per-connection settings
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_from_settings_creates_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(None, {"data_dir": str(tmp_path / "a" / "b")}, env={})
    store = Store.from_settings(settings)
    assert (tmp_path / "a" / "b" / "callcenter.db").is_file()
    assert store.ping()


def test_password_is_never_stored_only_ha1(store: Store, tmp_path: Path) -> None:
    agent = store.add_agent("alice", PASSWORD, "callcenter", {"sales": 3})
    store.close()
    expected_md5 = hashlib.md5(f"alice:callcenter:{PASSWORD}".encode()).hexdigest()
    expected_sha = hashlib.sha256(f"alice:callcenter:{PASSWORD}".encode()).hexdigest()
    assert (agent.ha1_md5, agent.ha1_sha256) == (expected_md5, expected_sha)
    files = list(tmp_path.iterdir())
    assert files
    for path in files:  # the database and its -wal/-shm side files
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_credentials_lookup(store: Store) -> None:
    agent = store.add_agent("alice", PASSWORD, "callcenter", {})
    assert store.get_agent_credentials("alice") == (agent.ha1_md5, agent.ha1_sha256)
    assert store.get_agent_credentials("bob") is None


def test_add_existing_agent_is_refused(store: Store) -> None:
    store.add_agent("alice", "x", "callcenter", {})
    with pytest.raises(AgentExistsError, match="'alice' already exists"):
        store.add_agent("alice", "y", "callcenter", {})


@pytest.mark.parametrize(
    ("username", "password", "skills", "message"),
    [
        ("a b", "pw", {}, "username 'a b'"),
        ("", "pw", {}, "username ''"),
        ("alice@example.com", "pw", {}, "username"),
        ("alice", "", {}, "password"),
        ("alice", "pw", {"sales": 6}, "skill sales: expected a level 1-5, got 6"),
        ("alice", "pw", {"sales": 0}, "skill sales: expected a level 1-5"),
        ("alice", "pw", {"sales": True}, "skill sales: expected a level 1-5"),
        ("alice", "pw", {"sa les": 1}, "skill name 'sa les'"),
    ],
)
def test_invalid_agents(
    store: Store, username: str, password: str, skills: dict[str, int], message: str
) -> None:
    with pytest.raises(InvalidAgentError, match=message):
        store.add_agent(username, password, "callcenter", skills)
    assert store.list_agents() == []


def test_list_and_remove(store: Store) -> None:
    store.add_agent("zoe", "pw", "callcenter", {"support": 1})
    store.add_agent("adam", "pw", "callcenter", {"sales": 5, "support": 2})
    assert [a.username for a in store.list_agents()] == ["adam", "zoe"]
    public = agent_public(store.list_agents()[0])
    assert public["skills"] == {"sales": 5, "support": 2}
    assert not any("ha1" in key for key in public)
    assert store.remove_agent("adam") is True
    assert store.remove_agent("adam") is False
    assert [a.username for a in store.list_agents()] == ["zoe"]


def test_times_come_back_as_utc(store: Store) -> None:
    before = datetime.now(UTC)
    agent = store.add_agent("alice", "pw", "callcenter", {})
    loaded = store.get_agent("alice")
    assert loaded is not None
    assert loaded.created_at == agent.created_at
    assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at >= before - timedelta(seconds=1)


def test_ping(store: Store, tmp_path: Path) -> None:
    assert store.ping() is True
    broken = Store(f"sqlite:///{tmp_path}")  # a directory, not a database file
    assert broken.ping() is False


def test_in_memory_database_is_shared_across_sessions() -> None:
    store = Store("sqlite://")
    store.create_all()
    store.add_agent("alice", "pw", "callcenter", {})
    assert store.get_agent_credentials("alice") is not None
