"""Schema migrations with Alembic, configured in code: no alembic.ini is needed at run time.

``upgrade(engine)`` brings any database to the newest revision: an empty one gets every table, one made
by ``create_all`` before Alembic existed keeps its rows (the baseline revision only creates the tables it
lacks, then the database is stamped like any other), a current one is left alone.

Developers add a revision after changing a table with
``python -m callcenter.store.migrate revision "what changed"`` (autogenerate against a scratch SQLite
database brought to head), then read and edit the file it writes in ``migrations/versions/``.
"""

from __future__ import annotations

import importlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.migration import MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from callcenter.core.logging import log_event

__all__ = [
    "MODEL_MODULES",
    "alembic_config",
    "current_revision",
    "head_revision",
    "include_name",
    "render_item",
    "schema_diff",
    "target_metadata",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Every module that defines tables: autogenerate compares the database against these models. A new
# table module is added here and gets a revision.
MODEL_MODULES: list[str] = [
    "callcenter.store.models",
    "callcenter.store.flow_versions",
    "callcenter.store.crm",
    "callcenter.calls.callback",  # callback_request (imported only when autogenerating: it is heavy)
    "callcenter.kb.models",
    "callcenter.auth.models",
    "callcenter.store.admin_config",
]
_LEGACY_TABLES = frozenset({"agent", "callrecord", "flow_version"})  # what create_all used to make
_PG_LOCK_KEY = 0x6363_6D69  # "ccmi": one migrating process at a time on a shared PostgreSQL


def target_metadata() -> MetaData:
    for name in MODEL_MODULES:
        importlib.import_module(name)
    return SQLModel.metadata


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic Config built in code; ``connection`` (preferred) or ``url`` is what env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migration revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (blocking: call it from a worker thread on the server)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        tables = set(inspect(conn).get_table_names())
        before = MigrationContext.configure(conn).get_current_revision()
        if before is None and tables & _LEGACY_TABLES:
            log_event(log, "store.legacy_database", tables=sorted(tables & _LEGACY_TABLES))
        cfg = alembic_config(connection=conn)
        applied: list[str] = []

        def on_version_apply(*, step: MigrationInfo, **_: Any) -> None:
            applied.append(step.up_revision_id or "")

        cfg.attributes["on_version_apply"] = on_version_apply
        command.upgrade(cfg, revision)
    if applied:
        log_event(log, "store.migrated", from_revision=before, to_revision=applied[-1], steps=len(applied))


# -- used by env.py and by the tests that compare models with migrations ----------------------------------


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate looks only at tables that are models; virtual tables (SQLite FTS5 and their shadow
    tables, created by raw SQL in revisions) and other non-model tables are left alone."""
    if type_ == "table":
        return name in target_metadata().tables
    return True


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our column types as plain SQLAlchemy ones, so revisions import nothing from callcenter:
    UTCDateTime → DateTime (its impl), SQLModel's AutoString → String."""
    if type_ == "type":
        from sqlmodel.sql.sqltypes import AutoString

        from callcenter.store.db import UTCDateTime

        if isinstance(obj, UTCDateTime):
            return "sa.DateTime()"
        if isinstance(obj, AutoString):
            return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


def schema_diff(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the models ([] when they agree)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": include_name,
                "render_as_batch": conn.dialect.name == "sqlite",
            },
        )
        return list(compare_metadata(ctx, target_metadata()))


def _revision(message: str) -> None:
    """Autogenerate a revision against a scratch SQLite database at head."""
    from callcenter.store.db import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'scratch.db'}"
        engine = make_engine(url)
        upgrade(engine)
        with engine.begin() as conn:
            head = head_revision()
            rev_id = f"{int(head) + 1:04d}" if head.isdigit() else None
            cfg = alembic_config(connection=conn)
            cfg.attributes["autogenerate"] = True
            command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
        engine.dispose()


if __name__ == "__main__":  # pragma: no cover - a developer tool
    if len(sys.argv) >= 3 and sys.argv[1] == "revision":
        _revision(sys.argv[2])
    else:
        sys.exit('usage: python -m callcenter.store.migrate revision "message"')
