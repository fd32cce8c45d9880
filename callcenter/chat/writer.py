"""MessageWriter: chat messages stored by one thread, in batches, each caller's await ending once its
message is committed.

Why not ``asyncio.to_thread(store.add_message)`` per message: at hundreds of messages a second the
default pool's threads (a) contend for SQLite's single write lock — a thread that finds it taken sleeps
in SQLite's busy handler (1, 2, 5, 10 … ms backoff), the tail of the delivery latency — and (b) each runs
the ORM's unit of work under the GIL the event loop needs. Here one thread drains whatever has queued
(no linger: an idle server writes each message at once, a busy one writes them together), inserts them
with one ``executemany`` (SQLAlchemy Core, ``RETURNING id``) in one transaction, and hands the ids back
with one ``call_soon_threadsafe`` per batch and event loop.

"Nothing accepted is lost" holds as before: :meth:`MessageWriter.add` returns only after the commit;
if the batch fails, each message is tried in its own transaction and only the ones the database refuses
raise (in their own caller). A caller cancelled while waiting does not unqueue its message: it is
written anyway (as a ``to_thread`` call would have been).

The thread starts with the first message and ends after ``idle_s`` without one (tests make many stores).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from callcenter.core.logging import log_event
from callcenter.store.crm import Message

__all__ = ["MessageWriter", "Row"]

log = logging.getLogger("callcenter.chat.writer")

_TABLE = Message.__table__  # type: ignore[attr-defined]
_INSERT = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)

# (loop, future, conversation_id, speaker, text, at)
_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]", int, str, str, datetime]
Row = dict[str, Any]


class MessageWriter:
    """See the module docstring. ``engine``: the store's SQLAlchemy engine."""

    def __init__(self, engine: Engine, *, max_batch: int = 500, idle_s: float = 5.0) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._idle_s = idle_s
        self._lock = threading.Lock()  # guards _thread against the idle exit racing a new message
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.written = 0
        self.refused = 0  # messages the database refused (their callers got the error)
        self.slowest_batch_s = 0.0  # the longest batch write (transaction + retries), for diagnostics

    async def add(self, conversation_id: int, speaker: str, text: str, at: datetime) -> int:
        """Store one message; returns its id once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._lock:
            self._queue.put((loop, future, conversation_id, speaker, text, at))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chat-message-writer", daemon=True)
                self._thread.start()
        return await future

    # -- the writer thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # nothing slipped in before the lock: stop
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - the thread must live on, and no caller hang
                log_event(log, "chat_writer_failed", level=logging.ERROR, exc_info=True)
                for loop, future, *_ in batch:
                    _call_soon(loop, _resolve, [(future, exc)])

    def _write(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        rows: list[Row] = [
            {"conversation_id": c, "speaker": s, "text": t, "at": at} for _, _, c, s, t, at in batch
        ]
        results: list[int | BaseException]
        try:
            with self._engine.begin() as conn:
                results = [int(i) for i in conn.execute(_INSERT, rows).scalars()]
                if len(results) != len(batch):  # not with sort_by_parameter_order; rolled back if so
                    raise RuntimeError(f"{len(results)} ids for {len(batch)} messages")
        except Exception:
            log_event(log, "chat_messages_batch_failed", level=logging.WARNING, messages=len(batch))
            results = [self._write_one(row) for row in rows]
        self.batches += 1
        self.slowest_batch_s = max(self.slowest_batch_s, time.perf_counter() - started)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]] = {}
        for item, result in zip(batch, results, strict=True):
            by_loop.setdefault(item[0], []).append((item[1], result))
            if isinstance(result, BaseException):
                self.refused += 1
            else:
                self.written += 1
        for loop, done in by_loop.items():
            _call_soon(loop, _resolve, done)

    def _write_one(self, row: Row) -> int | BaseException:
        try:
            with self._engine.begin() as conn:
                return int(conn.execute(_INSERT, row).scalar_one())
        except Exception as exc:  # noqa: BLE001 - handed to the one caller whose message it was
            log_event(
                log,
                "chat_message_refused",
                level=logging.ERROR,
                conversation_id=row["conversation_id"],
                exc_info=True,
            )
            return exc


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more (the rows are committed)
        pass


def _resolve(done: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for future, result in done:
        if future.done():  # the caller was cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
