"""Alembic: models and migrations agree on both backends; old create_all databases keep their rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from callcenter.core.config import load_settings
from callcenter.store import Store
from callcenter.store.db import make_engine
from callcenter.store.migrate import current_revision, head_revision, schema_diff, upgrade


def test_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []  # autogenerate would change nothing
    engine.dispose()


def test_upgrading_twice_changes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    store = Store(database_url)
    store.add_agent("alice", "pw", "callcenter", {"sales": 2})
    upgrade(engine)
    assert store.get_agent("alice") is not None
    assert schema_diff(engine) == []
    store.close()
    engine.dispose()


def _legacy_schema(engine: sa.Engine) -> None:
    """The tables as create_all made them before Alembic (agents had no languages)."""
    meta = sa.MetaData()
    sa.Table(
        "agent", meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True, index=True),
        sa.Column("realm", sa.String(128), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("skills", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )  # fmt: skip
    sa.Table(
        "callrecord", meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sip_call_id", sa.String(255), nullable=False, index=True),
        sa.Column("from_uri", sa.String, nullable=False),
        sa.Column("to_uri", sa.String, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False, index=True),
        sa.Column("answered_at", sa.DateTime),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("hangup_by", sa.String(16)),
        sa.Column("disposition", sa.String(64)),
        sa.Column("extra", sa.JSON, nullable=False),
    )  # fmt: skip
    meta.create_all(engine)
    now = datetime(2026, 5, 1, 12, 0)
    with engine.begin() as conn:
        conn.execute(
            meta.tables["agent"].insert(),
            {"username": "bob", "realm": "callcenter", "ha1_md5": "0" * 32, "ha1_sha256": "1" * 64,
             "skills": {"support": 3}, "created_at": now},
        )  # fmt: skip
        conn.execute(
            meta.tables["callrecord"].insert(),
            {"sip_call_id": "c1@x", "from_uri": "<sip:1@x>", "to_uri": "<sip:100@x>", "started_at": now,
             "disposition": "answered", "extra": {"queue": "support"}},
        )  # fmt: skip


def test_a_database_made_before_alembic_is_upgraded_keeping_its_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    _legacy_schema(engine)  # no flow_version table either: it came later
    assert current_revision(engine) is None

    store = Store(database_url)
    store.migrate()

    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []
    bob = store.get_agent("bob")
    assert bob is not None and bob.skills == {"support": 3} and bob.languages == []
    call = store.get_call("c1@x")
    assert call is not None and call.disposition == "answered" and call.extra == {"queue": "support"}
    assert call.started_at == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    store.add_agent("carol", "pw", "callcenter", {}, ["en"])  # the new column works
    assert store.get_agent("carol").languages == ["en"]  # type: ignore[union-attr]
    store.close()
    engine.dispose()


def test_from_settings_migrates_a_new_database(tmp_path: Path) -> None:
    settings = load_settings(None, {"data_dir": str(tmp_path / "d")}, env={})
    store = Store.from_settings(settings)
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert {"agent", "callrecord", "flow_version", "customer", "ticket", "ticket_event", "conversation",
            "message", "feedback", "alembic_version"} <= tables  # fmt: skip
    store.close()
