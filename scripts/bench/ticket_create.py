"""Ticket creation rate on SQLite (issue 7 target: >= 500/s).

Two paths, each on a fresh database file (WAL, synchronous=NORMAL as the server runs it), one ticket
per transaction as in production:

* ``record_call``: the post-call hook for an unresolved call — conversation with a six-utterance
  transcript, extractive summary, ticket with SLA due times, audit rows; from new callers (customer
  created) and from callers already in the CRM (the dedupe query looks for their open ticket);
* ``create``: a ticket filed through the API/CLI (``TicketRepo.create``).

Prints one line per path, e.g. ``create: 812 tickets/s (1999 in 2.46 s of CPU)``. The rate is per second
of this process's CPU time (SQLite runs in-process, commits do not fsync in WAL/NORMAL), so it stays
comparable on a machine shared with other work; on an idle machine wall time is about the same.
Usage: ``python scripts/bench/ticket_create.py [--count N]``.
"""

from __future__ import annotations

import argparse
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


def bench_record_call(count: int, folder: Path, *, known: bool = False) -> float:
    engine = make_engine(f"sqlite:///{folder / f'record_call_{known}.db'}")
    upgrade(engine)
    service = TicketService(engine, TicketsSettings(dedupe_days=7))
    if known:  # callers already in the CRM (without open tickets): the dedupe query runs for each
        with Session(engine) as session:
            for i in range(count):
                service.customers.create_in(session, [f"+4930{1000000 + i}"], name=f"Customer {i}")
            session.commit()
    start_at = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    calls = [
        HandledCall(
            call_id=f"bench-{i}@example.com", caller=f"+4930{1000000 + i}", started_at=start_at,
            ended_at=start_at + timedelta(minutes=2), disposition="abandoned", flow="hotline_en",
            ivr_outcome="queued", queue="support", intent="refund", language="en", transcript=TRANSCRIPT,
        )  # fmt: skip
        for i in range(count)
    ]
    service.record_call_sync(calls[0])  # warm up: imports, statement caches
    began = time.process_time()
    for call in calls[1:]:
        service.record_call_sync(call)
    elapsed = time.process_time() - began
    assert service.repo.count() == count
    engine.dispose()
    return elapsed


def bench_create(count: int, folder: Path) -> float:
    engine = make_engine(f"sqlite:///{folder / 'create.db'}")
    upgrade(engine)
    repo = TicketService(engine, TicketsSettings()).repo
    repo.create("warm up")
    began = time.process_time()
    for i in range(count - 1):
        repo.create(f"Refund for order {i}", body="Kettle arrived broken.", queue="support", tags=["refund"])
    elapsed = time.process_time() - began
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="tickets per path (default 2000)")
    args = parser.parse_args()
    n = max(2, args.count)
    with tempfile.TemporaryDirectory() as tmp:
        runs: list[tuple[str, Callable[[int, Path], float]]] = [
            ("record_call (new callers)", bench_record_call),
            ("record_call (known callers)", partial(bench_record_call, known=True)),
            ("create", bench_create),
        ]
        for name, run in runs:
            elapsed = run(n, Path(tmp))
            rate = (n - 1) / elapsed
            print(f"{name}: {rate:.0f} tickets/s ({n - 1} in {elapsed:.2f} s of CPU)", flush=True)


if __name__ == "__main__":
    main()
