"""CallRecordWriter: call records written off the event loop, in batches, by one thread.

The server calls ``call_started`` / ``call_answered`` / ``call_ended`` from its event loop; each is a
``SimpleQueue.put`` (no lock shared with the writer, never blocks). One thread drains the queue and
writes whatever has accumulated in one transaction with executemany (SQLAlchemy Core, not the ORM:
the GIL is shared with the event loop, so the per-call Python work is kept small).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from callcenter.core.logging import log_event
from callcenter.core.text import clean_json, clean_text
from callcenter.store.models import CallRecord, HangupBy
from callcenter.store.repo import Store

__all__ = ["CallRecordWriter"]

log = logging.getLogger(__name__)

_TABLE = CallRecord.__table__  # type: ignore[attr-defined]
_UPDATABLE = ("answered_at", "ended_at", "hangup_by", "disposition", "extra")
_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit

_START, _ANSWER, _END, _EXTRA, _FLUSH, _STOP = range(6)


@dataclass
class _Row:
    """A call's columns as this batch leaves them; ``id`` None = not in the database yet."""

    id: int | None
    values: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False


class CallRecordWriter:
    """Batches call-record inserts and updates, keyed by SIP Call-ID, on a background thread."""

    def __init__(
        self, store: Store, *, max_batch: int = 2000, linger_s: float = 0.2, node: str | None = None
    ) -> None:
        self._store = store
        self._node = node  # this server's node_id, on every record it starts (extra["node"])
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._thread: threading.Thread | None = None
        self.failed_batches = 0  # batches dropped after a retry (also logged)

    # -- producer side (any thread, typically the event loop) -----------------------------------------

    def call_started(self, sip_call_id: str, from_uri: str, to_uri: str, started_at: datetime) -> None:
        # Header text may carry undecodable bytes from the wire: cleaned before it meets the database.
        self._queue.put(
            (_START, clean_text(sip_call_id), clean_text(from_uri), clean_text(to_uri), started_at)
        )

    def call_answered(self, sip_call_id: str, at: datetime) -> None:
        """First answer wins (a re-INVITE does not move it)."""
        self._queue.put((_ANSWER, clean_text(sip_call_id), at))

    def call_ended(
        self, sip_call_id: str, at: datetime, hangup_by: HangupBy | None, disposition: str
    ) -> None:
        """First end wins."""
        self._queue.put((_END, clean_text(sip_call_id), at, hangup_by, disposition))

    def call_extra(self, sip_call_id: str, fields: dict[str, Any]) -> None:
        """Merge JSON-serialisable ``fields`` into the record's ``extra`` (later issues' columns)."""
        self._queue.put((_EXTRA, clean_text(sip_call_id), dict(fields)))

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("CallRecordWriter already started")
        self._thread = threading.Thread(target=self._run, name="call-record-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is written; False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("CallRecordWriter is not running")
        done = threading.Event()
        self._queue.put((_FLUSH, done))
        return done.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Write what is queued, then end the thread. Calls made after this are not written."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put((_STOP,))
        thread.join(timeout)

    # -- consumer side (the writer thread) ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0][0] < _FLUSH:
                # Linger a moment so a busy server writes tens of transactions a second, not
                # hundreds, and a short call's start and end land in one INSERT.
                time.sleep(self._linger_s)
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            ops = [op for op in batch if op[0] < _FLUSH]
            if ops:
                self._write_with_retry(ops)
            stop = False
            for op in batch:
                if op[0] == _FLUSH:
                    op[1].set()
                elif op[0] == _STOP:
                    stop = True
            if stop:
                return

    def _write_with_retry(self, ops: list[tuple[Any, ...]]) -> None:
        """One transaction for the batch; if it fails twice, each call's operations on their own, so a
        call the database refuses loses only its own record, never its neighbours'."""
        for attempt in (1, 2):
            try:
                with self._store.engine.begin() as conn:
                    self._write(conn, ops)
                return
            except Exception:
                log_event(
                    log, "callrecord.write_failed", level=logging.WARNING, ops=len(ops), exc_info=attempt == 2
                )
        by_call: dict[str, list[tuple[Any, ...]]] = {}
        for op in ops:
            by_call.setdefault(op[1], []).append(op)
        for call_id, call_ops in by_call.items():
            try:
                with self._store.engine.begin() as conn:
                    self._write(conn, call_ops)
            except Exception:
                self.failed_batches += 1
                log_event(
                    log,
                    "callrecord.dropped",
                    level=logging.ERROR,
                    call_id=call_id,
                    ops=len(call_ops),
                    exc_info=True,
                )

    def _write(self, conn: Connection, ops: list[tuple[Any, ...]]) -> None:
        rows: dict[str, _Row] = {}  # latest row per Call-ID touched in this batch
        new_rows: list[_Row] = []
        missing = {op[1] for op in ops if op[0] != _START}
        missing.difference_update(op[1] for op in ops if op[0] == _START)
        if missing:
            rows.update(self._load(conn, sorted(missing)))
        for op in ops:
            kind, call_id = op[0], op[1]
            if kind == _START:
                fresh = _Row(None, {"sip_call_id": call_id, "from_uri": op[2], "to_uri": op[3]})
                fresh.values.update(started_at=op[4], **dict.fromkeys(_UPDATABLE))
                fresh.values["extra"] = {"node": self._node} if self._node else {}
                rows[call_id] = fresh
                new_rows.append(fresh)
                continue
            row = rows.get(call_id)
            if row is None:
                log_event(log, "callrecord.unknown_call", call_id=call_id, level=logging.WARNING)
                continue
            values = row.values
            if kind == _ANSWER and values["answered_at"] is None:
                values["answered_at"] = op[2]
            elif kind == _END and values["ended_at"] is None:
                values.update(ended_at=op[2], hangup_by=op[3], disposition=op[4])
            elif kind == _EXTRA:
                values["extra"] = {**(values["extra"] or {}), **clean_json(op[2])}
            row.dirty = True
        if new_rows:
            conn.execute(insert(_TABLE), [r.values for r in new_rows])
        changed = [r for r in rows.values() if r.dirty and r.id is not None]
        if changed:
            stmt = (
                update(_TABLE)
                .where(_TABLE.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in _UPDATABLE})
            )
            params = [{"b_id": r.id, **{f"b_{n}": r.values[n] for n in _UPDATABLE}} for r in changed]
            conn.execute(stmt, params)

    def _load(self, conn: Connection, call_ids: list[str]) -> dict[str, _Row]:
        """Latest existing row per Call-ID."""
        out: dict[str, _Row] = {}
        cols = [_TABLE.c.id, _TABLE.c.sip_call_id, *(_TABLE.c[n] for n in _UPDATABLE)]
        for i in range(0, len(call_ids), _CHUNK):
            chunk = call_ids[i : i + _CHUNK]
            query = select(*cols).where(_TABLE.c.sip_call_id.in_(chunk)).order_by(_TABLE.c.id)
            for rec in conn.execute(query).mappings():
                out[rec["sip_call_id"]] = _Row(rec["id"], {n: rec[n] for n in _UPDATABLE})
        return out
