"""Alembic environment: migrates the connection ``callcenter.store.migrate`` hands over (or a URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from callcenter.store.db import make_engine
from callcenter.store.migrate import include_name, render_item, target_metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # The models matter only to autogenerate (importing every table module is not free).
        target_metadata=target_metadata() if context.config.attributes.get("autogenerate") else None,
        # SQLite cannot ALTER most things: autogenerate writes batch operations (copy and move).
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
        render_item=render_item,
        on_version_apply=context.config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported")
run_migrations_online()
