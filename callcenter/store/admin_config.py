"""Tables for what the admin console manages: queues and business-hours schedules made in the browser.

Those in config.yaml are *provisioned* and never stored here; a row holds the settings of one managed
queue or schedule as JSON (the shapes of ``routing.queues.NAME`` and ``business_hours.NAME``), so a new
optional setting needs no migration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from callcenter.store.db import UTCDateTime, utcnow

__all__ = ["AdminConfigRepo", "ManagedQueue", "ManagedSchedule"]


class ManagedQueue(SQLModel, table=True):
    __tablename__ = "managed_queue"

    name: str = Field(primary_key=True, max_length=64)
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, description="routing.queues.NAME")
    updated_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ManagedSchedule(SQLModel, table=True):
    __tablename__ = "managed_schedule"

    name: str = Field(primary_key=True, max_length=64)
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, description="business_hours.NAME")
    updated_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


_Row = type[ManagedQueue] | type[ManagedSchedule]


class AdminConfigRepo:
    """Blocking reads and writes (call them from a worker thread on the server)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def queues(self) -> dict[str, dict[str, Any]]:
        return self._all(ManagedQueue)

    def put_queue(self, name: str, settings: dict[str, Any], actor: str | None) -> None:
        self._put(ManagedQueue, name, settings, actor)

    def delete_queue(self, name: str) -> bool:
        return self._delete(ManagedQueue, name)

    def schedules(self) -> dict[str, dict[str, Any]]:
        return self._all(ManagedSchedule)

    def put_schedule(self, name: str, settings: dict[str, Any], actor: str | None) -> None:
        self._put(ManagedSchedule, name, settings, actor)

    def delete_schedule(self, name: str) -> bool:
        return self._delete(ManagedSchedule, name)

    def _all(self, table: _Row) -> dict[str, dict[str, Any]]:
        with Session(self.engine) as session:
            rows: list[Any] = list(session.exec(select(table)).all())
            return {r.name: dict(r.settings) for r in sorted(rows, key=lambda r: r.name)}

    def _put(self, table: _Row, name: str, settings: dict[str, Any], actor: str | None) -> None:
        with Session(self.engine) as session:
            row: Any = session.get(table, name)
            if row is None:
                row = table(name=name, settings=settings, updated_by=actor)
            else:
                row.settings = settings
                row.updated_by = actor
                row.updated_at = utcnow()
            session.add(row)
            session.commit()

    def _delete(self, table: _Row, name: str) -> bool:
        with Session(self.engine) as session:
            row = session.get(table, name)
            if row is None:
                return False
            session.delete(row)
            session.commit()
            return True
