"""The post-call policy in batches: many calls per transaction, same tickets as one by one."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from ticket_clock import WallClock

from callcenter.core.config import TicketsSettings
from callcenter.customers import CustomerRepo
from callcenter.store.crm import Conversation, Customer, Feedback, Message
from callcenter.tickets import CsatAnswer, HandledCall, TicketService, Turn


def service(engine: Engine, clock: WallClock, **settings: object) -> TicketService:
    return TicketService(engine, TicketsSettings.model_validate(settings), now=clock, linger_s=0.0)


def call(
    clock: WallClock, call_id: str, caller: str, text: str = "Where is order 55123?", **more: Any
) -> HandledCall:
    values: dict[str, Any] = {
        "call_id": call_id, "caller": caller, "started_at": clock.now - timedelta(minutes=2),
        "ended_at": clock.now, "disposition": "abandoned", "flow": "hotline_en", "queue": "support",
        "intent": "order_status", "transcript": (Turn("caller", text, 1.0),),
    }  # fmt: skip
    values.update(more)
    return HandledCall(**values)


def count(engine: Engine, model: Any) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_two_calls_of_one_new_caller_in_a_batch_make_one_ticket_and_one_customer(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock, phone_country_code="49")
    numbers = svc.record_calls_sync(
        [
            call(clock, "a1", "+4930111"),
            call(clock, "b1", "+4930222"),
            call(clock, "a2", "030 111", "Still waiting, my email is ada@example.com.", caller_name="Ada"),
        ]
    )
    assert numbers[0] is not None and numbers[1] is not None
    assert numbers[2] == numbers[0]  # the second call found the first's ticket (same number, normalised)
    assert count(engine, Customer) == 2
    detail = svc.repo.get(numbers[0])
    assert len(detail.conversations) == 2
    assert detail.ticket.entities == {"order": ["55123"], "email": ["ada@example.com"]}
    assert [e.field for e in detail.events] == ["created", "conversation", "conversation"]


def test_a_batch_files_what_one_by_one_filing_files(engine: Engine, clock: WallClock) -> None:
    CustomerRepo(engine).add("Vip", ["+4930999"], vip_level=3)
    svc = service(engine, clock)
    pending = svc.record_call_sync(call(clock, "old", "+4930555"))
    assert pending is not None
    svc.repo.set_status(pending, "pending", actor="agent:bob")
    clock.advance(hours=1)
    batch = [
        call(clock, "n1", "+4930555", "I called before about order 55123."),  # dedupe → back to open
        call(clock, "n2", "+4930999"),  # VIP → high
        call(clock, "n3", ""),  # withheld: a ticket without customer
        call(clock, "n4", "+4930777", disposition="answered", agent="bob"),  # resolved: no ticket
        call(clock, "n5", "+4930888", flow=None, queue=None, transcript=()),  # never reached a flow
        call(clock, "n6", "+4930666", csat=CsatAnswer(2, 3)),
    ]
    numbers = svc.record_calls_sync(batch)
    assert numbers[0] == pending and numbers[3] is None and numbers[4] is None
    assert len({n for n in numbers if n is not None}) == 4
    again = svc.repo.get(pending)
    assert again.ticket.status == "open" and len(again.conversations) == 2
    assert [e.field for e in again.events][-2:] == ["status", "conversation"]
    assert svc.repo.get(numbers[1]).ticket.priority == "high"  # type: ignore[arg-type]
    withheld = svc.repo.get(numbers[2])  # type: ignore[arg-type]
    assert withheld.customer is None and withheld.ticket.subject == "Where is order 55123?"
    assert withheld.ticket.resolution_due is not None  # SLA clocks started as for a single ticket
    with Session(engine) as session:
        answered = session.execute(select(Conversation).where(col(Conversation.call_id) == "n4")).scalar_one()
        assert answered.ticket_id is None and answered.agent == "bob"  # the conversation is kept
        assert session.execute(select(Conversation).where(col(Conversation.call_id) == "n5")).first() is None
        [rated] = session.execute(select(Feedback)).scalars().all()
        assert (rated.score, rated.comment) == (3, "answered 2 of 3")
        assert session.execute(select(func.count()).select_from(Message)).scalar_one() == 6


def test_the_hook_run_twice_for_one_call_in_a_batch_keeps_one_conversation(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock)
    first, second = svc.record_calls_sync(
        [
            call(clock, "c1", "+4930111", csat=CsatAnswer(4)),
            call(clock, "c1", "+4930111", "Where is order 77777?", csat=CsatAnswer(5)),
        ]
    )
    assert first == second
    detail = svc.repo.get(first)  # type: ignore[arg-type]
    [(conv, messages)] = detail.conversations
    assert [m.text for m in messages] == ["Where is order 77777?"]  # replaced, not appended
    assert count(engine, Feedback) == 1
    assert [e.field for e in detail.events] == ["created", "conversation"]


async def test_calls_finishing_together_share_transactions_and_each_gets_its_ticket(
    engine: Engine, clock: WallClock
) -> None:
    svc = TicketService(engine, TicketsSettings(), now=clock, linger_s=0.05, max_batch=50)
    calls = [call(clock, f"c{i}", f"+49301{i:04d}") for i in range(40)]
    numbers = await asyncio.gather(*(svc.record_call(c) for c in calls))
    svc.close()
    assert len(set(numbers)) == 40 and None not in numbers
    assert svc.writer.batches < 40
    for c, number in zip(calls, numbers, strict=True):  # each caller got its own ticket back
        detail = svc.repo.get(number)  # type: ignore[arg-type]
        assert detail.conversations[0][0].call_id == c.call_id


def test_stop_writes_every_call_already_accepted(engine: Engine, clock: WallClock) -> None:
    svc = TicketService(engine, TicketsSettings(), now=clock, linger_s=0.05, max_batch=7)
    futures = [svc.writer.submit(call(clock, f"c{i}", f"+49302{i:04d}")) for i in range(30)]
    svc.close()  # returns once the queue is written
    assert all(f.done() for f in futures)
    assert svc.repo.count() == 30


async def test_after_close_calls_are_still_filed_one_by_one(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock)
    svc.close()
    assert await svc.record_call(call(clock, "late", "+4930123")) is not None


async def test_a_call_that_fails_costs_only_its_own_ticket(engine: Engine, clock: WallClock) -> None:
    svc = TicketService(engine, TicketsSettings(), now=clock, linger_s=0.05)
    bad = call(clock, "bad", "+4930444", csat=CsatAnswer(9, 5))  # breaks the feedback CHECK (1-5)
    good = [call(clock, f"g{i}", f"+49303{i:04d}") for i in range(5)]
    numbers = await asyncio.gather(*(svc.record_call(c) for c in [good[0], bad, *good[1:]]))
    svc.close()
    assert numbers[1] is None  # logged, never raised into the call
    assert None not in numbers[:1] + numbers[2:]
    assert svc.repo.count() == 5 and svc.writer.fallbacks == 1
