"""Published IVR flow versions: an append-only history per flow (text, author, time, diff).

The live version of a flow is its newest row. A rollback appends a new row whose text equals the old
one (``rolled_back_from`` names it), so the history is never rewritten. This module knows nothing of
flows beyond their text: checking a flow is the IVR's job (``callcenter.ivr.versions``).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Text, UniqueConstraint, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Field, Session, SQLModel, col, select

from callcenter.store.db import UTCDateTime, utcnow

__all__ = [
    "FlowSource",
    "FlowVersion",
    "add_flow_version",
    "flow_version_public",
    "get_flow_version",
    "latest_flow_version",
    "latest_flow_versions",
    "list_flow_versions",
    "text_sha256",
    "unified_diff",
]

FlowSource = Literal["file", "api", "cli", "rollback"]
FLOW_SOURCES: tuple[str, ...] = ("file", "api", "cli", "rollback")
_ATTEMPTS = 5  # another process (CLI vs server) may take the next version number first


class FlowVersion(SQLModel, table=True):
    __tablename__ = "flow_version"
    __table_args__ = (UniqueConstraint("flow_id", "version", name="uq_flow_version"),)

    id: int | None = Field(default=None, primary_key=True)
    flow_id: str = Field(index=True, max_length=128)
    version: int = Field(ge=1, description="1, 2, 3 … per flow")
    yaml: str = Field(sa_type=Text, description="the flow file's text, as published")
    sha256: str = Field(max_length=64, description="hex SHA-256 of the UTF-8 text")
    author: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    message: str | None = Field(default=None, sa_type=Text)
    diff: str = Field(default="", sa_type=Text, description="unified diff against the previous version")
    source: str = Field(max_length=16, description="file, api, cli or rollback")
    rolled_back_from: int | None = Field(default=None, description="the version a rollback restored")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n\\ No newline at end of file\n"  # as diff(1) and git mark it
    return lines


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    """``diff -u`` of two texts ("" when equal)."""
    return "".join(difflib.unified_diff(_lines(old), _lines(new), old_name, new_name))


def _label(flow_id: str, version: int) -> str:
    return f"{flow_id} v{version}" if version > 0 else "/dev/null"


def latest_flow_version(engine: Engine, flow_id: str) -> FlowVersion | None:
    with Session(engine, expire_on_commit=False) as session:
        return _latest(session, flow_id)


def _latest(session: Session, flow_id: str) -> FlowVersion | None:
    query = (
        select(FlowVersion).where(FlowVersion.flow_id == flow_id).order_by(col(FlowVersion.version).desc())
    )
    return session.exec(query.limit(1)).first()


def latest_flow_versions(engine: Engine) -> dict[str, FlowVersion]:
    """flow id → its newest version, for every flow ever published."""
    newest = (
        select(FlowVersion.flow_id, func.max(FlowVersion.version).label("v"))
        .group_by(col(FlowVersion.flow_id))
        .subquery()
    )
    query = select(FlowVersion).join(
        newest, (col(FlowVersion.flow_id) == newest.c.flow_id) & (col(FlowVersion.version) == newest.c.v)
    )
    with Session(engine, expire_on_commit=False) as session:
        return {row.flow_id: row for row in session.exec(query)}


def list_flow_versions(engine: Engine, flow_id: str) -> list[FlowVersion]:
    """Every version of ``flow_id``, oldest first ([] for a flow never published)."""
    query = select(FlowVersion).where(FlowVersion.flow_id == flow_id).order_by(col(FlowVersion.version))
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query))


def get_flow_version(engine: Engine, flow_id: str, version: int) -> FlowVersion | None:
    query = select(FlowVersion).where(FlowVersion.flow_id == flow_id, FlowVersion.version == version)
    with Session(engine, expire_on_commit=False) as session:
        return session.exec(query).first()


def add_flow_version(
    engine: Engine,
    flow_id: str,
    text: str,
    *,
    author: str,
    source: str,
    message: str | None = None,
    rolled_back_from: int | None = None,
    before_commit: Callable[[FlowVersion], None] | None = None,
) -> tuple[FlowVersion, bool]:
    """Append ``text`` as the next version of ``flow_id``; ``(row, True)``.

    When ``text`` equals the newest version already, nothing is stored: ``(that row, False)``.
    ``before_commit(row)`` runs inside the transaction after the insert (the registry writes the flow
    file there); if it raises, the row is rolled back and the exception propagates.
    """
    if source not in FLOW_SOURCES:
        raise ValueError(f"source must be one of {', '.join(FLOW_SOURCES)}, not {source!r}")
    sha = text_sha256(text)
    for attempt in range(_ATTEMPTS):
        with Session(engine, expire_on_commit=False) as session:
            latest = _latest(session, flow_id)
            if latest is not None and latest.sha256 == sha:
                return latest, False
            previous_version = latest.version if latest is not None else 0
            row = FlowVersion(
                flow_id=flow_id,
                version=previous_version + 1,
                yaml=text,
                sha256=sha,
                author=author,
                message=message,
                diff=unified_diff(
                    latest.yaml if latest is not None else "",
                    text,
                    _label(flow_id, previous_version),
                    _label(flow_id, previous_version + 1),
                ),
                source=source,
                rolled_back_from=rolled_back_from,
            )
            session.add(row)
            try:
                session.flush()  # takes the write lock, so a second writer waits for this one
            except (IntegrityError, OperationalError):
                # another process stored that version number first (or held a stale snapshot)
                session.rollback()
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            if before_commit is not None:
                before_commit(row)  # on error the session closes without commit: rolled back
            session.commit()
            return row, True
    raise AssertionError("unreachable")  # pragma: no cover


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def flow_version_public(row: FlowVersion, *, text: bool = False) -> dict[str, Any]:
    """JSON-ready view of a version; ``text`` adds the YAML and the diff."""
    out: dict[str, Any] = {
        "flow_id": row.flow_id,
        "version": row.version,
        "sha256": row.sha256,
        "author": row.author,
        "created_at": _iso(row.created_at),
        "source": row.source,
        "message": row.message,
        "rolled_back_from": row.rolled_back_from,
    }
    if text:
        out["yaml"] = row.yaml
        out["diff"] = row.diff
    return out
