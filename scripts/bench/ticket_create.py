"""Ticket creation rate on SQLite (issue 7 target: >= 500/s).

Paths, each on a fresh database file (WAL, synchronous=NORMAL as the server runs it):

* ``record_call``: the post-call hook for an unresolved call — conversation with a six-utterance
  transcript, extractive summary, ticket with SLA due times, audit rows; from new callers (customer
  created) and from callers already in the CRM (the dedupe query looks for their open ticket). Run as
  the server runs it: ``await TicketService.record_call`` from the event loop for every call, the
  ticket writer thread filing what has queued in one transaction per batch (≤ 200 calls, 50 ms
  linger); the line says how many calls a batch held. ``batches of 25`` is what a server receiving
  500 calls/s writes (50 ms of calls per batch). ``(one per transaction)`` is the same policy
  with ``record_call_sync`` per call (the CLI, and the server's path after shutdown began);
* ``create``: a ticket filed through the API/CLI (``TicketRepo.create``), one per transaction.

Prints one line per path, e.g. ``create: 812 tickets/s (1999 in 2.46 s of CPU)``. The rate is per second
of this process's CPU time (SQLite runs in-process, commits do not fsync in WAL/NORMAL), so it stays
comparable on a machine shared with other work; on an idle machine wall time is about the same.
Usage: ``python scripts/bench/ticket_create.py [--count N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from sqlmodel import Session

from callcenter.core.config import TicketsSettings
from callcenter.store.db import make_engine
from callcenter.store.migrate import upgrade
from callcenter.tickets import HandledCall, TicketService, Turn

TRANSCRIPT = (
    Turn("system", "Welcome to Example Shop. How can I help you?", 0.5),
    Turn("caller", "Hi, I ordered a kettle last week and it arrived broken.", 4.0, 0.92),
    Turn("system", "I am sorry to hear that. What is your order number?", 8.0),
    Turn("caller", "The order number is 5 5 1 2 3.", 11.0, 0.88),
    Turn("caller", "I would like a refund please, my email is li.wei@example.com.", 15.0, 0.9),
    Turn("system", "Thank you. All our agents are busy, we will call you back.", 20.0),
)


def _calls(count: int) -> list[HandledCall]:
    start_at = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    return [
        HandledCall(
            call_id=f"bench-{i}@example.com",
            caller=f"+4930{1000000 + i}",
            started_at=start_at,
            ended_at=start_at + timedelta(minutes=2),
            disposition="abandoned",
            flow="hotline_en",
            ivr_outcome="queued",
            queue="support",
            intent="refund",
            language="en",
            transcript=TRANSCRIPT,
        )  # fmt: skip
        for i in range(count)
    ]


def _service(count: int, path: Path, known: bool, max_batch: int = 200) -> TicketService:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    service = TicketService(engine, TicketsSettings(dedupe_days=7), max_batch=max_batch)
    if known:  # callers already in the CRM (without open tickets): the dedupe query runs for each
        with Session(engine) as session:
            for i in range(count):
                service.customers.create_in(session, [f"+4930{1000000 + i}"], name=f"Customer {i}")
            session.commit()
    return service


def bench_record_call(
    count: int, folder: Path, *, known: bool = False, max_batch: int = 200
) -> tuple[float, str]:
    """The server's path: every call awaits ``record_call``; the writer batches them."""
    service = _service(count, folder / f"batched_{known}_{max_batch}.db", known, max_batch)
    calls = _calls(count)

    async def run() -> list[int | None]:
        await service.record_call(calls[0])  # warm up: imports, statement caches
        began = time.process_time()
        numbers = await asyncio.gather(*(service.record_call(c) for c in calls[1:]))
        timing.append(time.process_time() - began)
        return numbers

    timing: list[float] = []
    numbers = asyncio.run(run())
    service.close()
    assert None not in numbers and service.repo.count() == count
    writer = service.writer
    service.repo.engine.dispose()
    return timing[0], f"{(writer.items - 1) / max(1, writer.batches - 1):.0f} calls per batch"


def bench_record_call_single(count: int, folder: Path, *, known: bool = False) -> tuple[float, str]:
    service = _service(count, folder / f"single_{known}.db", known)
    calls = _calls(count)
    service.record_call_sync(calls[0])
    began = time.process_time()
    for call in calls[1:]:
        service.record_call_sync(call)
    elapsed = time.process_time() - began
    assert service.repo.count() == count
    service.repo.engine.dispose()
    return elapsed, ""


def bench_create(count: int, folder: Path) -> tuple[float, str]:
    engine = make_engine(f"sqlite:///{folder / 'create.db'}")
    upgrade(engine)
    repo = TicketService(engine, TicketsSettings()).repo
    repo.create("warm up")
    began = time.process_time()
    for i in range(count - 1):
        repo.create(f"Refund for order {i}", body="Kettle arrived broken.", queue="support", tags=["refund"])
    elapsed = time.process_time() - began
    engine.dispose()
    return elapsed, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="tickets per path (default 2000)")
    args = parser.parse_args()
    n = max(2, args.count)
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[tuple[str, Callable[[int, Path], tuple[float, str]]]] = [
            ("record_call (new callers)", bench_record_call),
            ("record_call (known callers)", partial(bench_record_call, known=True)),
            # 500 calls/s arriving, 50 ms linger: about 25 calls in a batch
            ("record_call (new callers, batches of 25)", partial(bench_record_call, max_batch=25)),
            ("record_call (new callers, one per transaction)", bench_record_call_single),
            (
                "record_call (known callers, one per transaction)",
                partial(bench_record_call_single, known=True),
            ),
            ("create", bench_create),
        ]
        for name, run in runs:
            elapsed, note = run(n, Path(tmp))
            rate = (n - 1) / elapsed
            extra = f", {note}" if note else ""
            print(f"{name}: {rate:.0f} tickets/s ({n - 1} in {elapsed:.2f} s of CPU{extra})", flush=True)


if __name__ == "__main__":
    main()
