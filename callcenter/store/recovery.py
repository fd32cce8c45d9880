"""Start-up recovery after a crash: call records a previous run left open are closed as ``dropped``.

A call record is inserted when the call starts and completed when it ends. A process that is killed
(SIGKILL, OOM, power) never writes the end: at the next start, before any new call exists, every record
without ``ended_at`` belongs to a previous run. Such calls were cut off by the server, so they get
``disposition: dropped``, ``hangup_by: server`` and ``extra.recovered: true``.

Their ``ended_at`` is the last moment the old run is known to have been alive: the latest time stamp of
any call record (a start, an answer, an end), never earlier than the call's own start or answer. On a
busy server that is within seconds of the crash; it never counts the downtime as talk time (using
"now" would, for a restart hours later).

Durability (SQLite, see store/db.py): WAL with ``synchronous=NORMAL``. A committed transaction is in the
WAL file when the commit returns, so a *process* crash (SIGKILL included) loses nothing committed; only
an OS crash or power loss can lose the last transactions before the next checkpoint's fsync (never
corrupting the database). PostgreSQL keeps its own guarantees (``synchronous_commit``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine, func, select, update

from callcenter.core.logging import log_event
from callcenter.store.models import CallRecord

__all__ = ["recover_interrupted_calls"]

log = logging.getLogger(__name__)

_T = CallRecord.__table__  # type: ignore[attr-defined]


def recover_interrupted_calls(engine: Engine) -> int:
    """Close every call record left without an end; returns how many. Run once at start-up, before the
    server takes calls (afterwards, open records are live calls)."""
    with engine.begin() as conn:
        open_rows = conn.execute(
            select(_T.c.id, _T.c.started_at, _T.c.answered_at, _T.c.extra).where(_T.c.ended_at.is_(None))
        ).all()
        if not open_rows:
            return 0
        last_seen = conn.execute(
            select(func.max(_T.c.started_at), func.max(_T.c.answered_at), func.max(_T.c.ended_at))
        ).one()
        alive: datetime | None = max((t for t in last_seen if t is not None), default=None)
        for row in open_rows:
            own = max(t for t in (row.started_at, row.answered_at) if t is not None)
            ended = max(own, alive) if alive is not None else own
            conn.execute(
                update(_T)
                .where(_T.c.id == row.id)
                .values(
                    ended_at=ended,
                    hangup_by="server",
                    disposition="dropped",
                    extra={**(row.extra or {}), "recovered": True},
                )
            )
    log_event(log, "calls_recovered", level=logging.WARNING, dropped=len(open_rows), last_seen=str(alive))
    return len(open_rows)
