"""BatchWriter: items handed in from the event loop, written by one thread, many per transaction.

``submit`` is a ``SimpleQueue.put`` plus a ``concurrent.futures.Future`` (never blocks the loop). The
thread takes the first item, lingers ``linger_s`` so a busy server writes a few batches a second rather
than one transaction per item, then takes what has accumulated (at most ``max_batch``) and hands the
list to ``write_batch``. A failed batch is retried once; if it fails again each item is written alone
with ``write_one``, so one bad item costs only its own result (its future gets the exception).

``stop`` writes everything queued before it, then ends the thread. What a SIGKILL loses: the items
queued and the batch being written — at most ``linger_s`` plus one batch's write time of finished work.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from callcenter.core.logging import log_event

__all__ = ["BatchWriter"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class BatchWriter(Generic[T, R]):
    def __init__(
        self,
        write_batch: Callable[[list[T]], list[R]],
        write_one: Callable[[T], R],
        *,
        max_batch: int = 200,
        linger_s: float = 0.05,
        name: str = "batch-writer",
    ) -> None:
        self._write_batch = write_batch
        self._write_one = write_one
        self._max_batch = max(1, max_batch)
        self._linger_s = linger_s
        self._name = name
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # transactions written (the bench reports items per batch)
        self.items = 0
        self.fallbacks = 0  # batches that failed twice and were written item by item

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future resolves once its batch is committed. The thread starts on first
        use. Raises RuntimeError after ``stop``."""
        future: Future[R] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
                atexit.register(self.stop)  # a process ending without stop() still writes its queue
            self._queue.put((item, future))
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Write everything submitted so far, then end the thread (idempotent)."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._queue.put(_STOP)
        atexit.unregister(self.stop)
        thread.join(timeout)

    # -- the writer thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not _STOP:
                time.sleep(self._linger_s)
            batch = [first]
            while len(batch) < self._max_batch and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work = [entry for entry in batch if entry is not _STOP]
            if work:
                self._write(work)  # type: ignore[arg-type]
            if batch[-1] is _STOP:
                return

    def _write(self, work: list[tuple[T, Future[R]]]) -> None:
        # A cancelled waiter does not cancel the write: the item is still written, its result dropped.
        live = [future.set_running_or_notify_cancel() for _, future in work]
        items = [item for item, _ in work]
        results: list[R] | None = None
        for attempt in (1, 2):
            try:
                results = self._write_batch(items)
                break
            except Exception:
                log_event(
                    log, "tickets.batch_failed", level=logging.WARNING, items=len(items), attempt=attempt,
                    exc_info=True,
                )  # fmt: skip
        self.batches += 1
        self.items += len(items)
        if results is not None:
            for (_, future), ok, result in zip(work, live, results, strict=True):
                if ok:
                    future.set_result(result)
            return
        self.fallbacks += 1
        for (item, future), ok in zip(work, live, strict=True):
            try:
                one = self._write_one(item)
            except Exception as exc:  # noqa: BLE001 - handed to the waiter, which logs it
                if ok:
                    future.set_exception(exc)
            else:
                if ok:
                    future.set_result(one)
