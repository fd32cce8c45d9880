"""The ticket service: IVR create/update, the post-call policy, dedupe, audit trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from ticket_clock import WallClock

from callcenter.core.config import TicketsSettings
from callcenter.customers import CustomerRepo
from callcenter.ivr.services import TicketDraft, TicketUpdate, TranscriptEntry
from callcenter.tickets import HandledCall, InvalidTransition, TicketNotFound, TicketService, Turn

CALLER = "+4930123456"


def service(engine: Engine, clock: WallClock, **settings: object) -> TicketService:
    return TicketService(engine, TicketsSettings.model_validate(settings), now=clock)


def call(clock: WallClock, call_id: str = "c1", **fields: object) -> HandledCall:
    values: dict[str, object] = {
        "call_id": call_id,
        "caller": CALLER,
        "started_at": clock.now - timedelta(minutes=3),
        "ended_at": clock.now,
        "disposition": "abandoned",
        "flow": "hotline_en",
        "ivr_outcome": "caller_hangup",
        "queue": "support",
        "intent": "refund",
        "language": "en",
        "transcript": (
            Turn("system", "Welcome. How can I help?", 0.5),
            Turn("caller", "I want a refund for order 55123. The kettle leaks.", 4.0, 0.91),
        ),
    }
    values.update(fields)
    return HandledCall(**values)  # type: ignore[arg-type]


async def test_an_unresolved_call_files_a_ticket_with_transcript_summary_and_customer(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock, categories={"refund": "billing"})
    number = await svc.record_call(call(clock))
    assert number is not None
    detail = svc.repo.get(number)
    t = detail.ticket
    assert (t.status, t.queue, t.category, t.priority) == ("new", "support", "billing", "normal")
    assert t.subject == "I want a refund for order 55123."
    assert t.entities == {"order": ["55123"]}
    assert "abandoned" in t.tags
    assert detail.customer is not None  # created for the caller's number, so the next call finds it
    assert CustomerRepo(engine).find(phone=CALLER).id == detail.customer.id  # type: ignore[union-attr]
    [(conv, messages)] = detail.conversations
    assert (conv.call_id, conv.intent, conv.disposition) == ("c1", "refund", "abandoned")
    assert [(m.speaker, m.text) for m in messages] == [
        ("system", "Welcome. How can I help?"),
        ("caller", "I want a refund for order 55123. The kettle leaks."),
    ]
    assert messages[1].confidence == pytest.approx(0.91)
    assert [e.field for e in detail.events] == ["created", "conversation"]


@pytest.mark.parametrize(
    ("policy", "disposition", "outcome", "filed"),
    [
        ("unresolved", "answered", "transferred", False),
        ("unresolved", "completed", "hangup", False),  # the flow ended the call: self-service
        ("unresolved", "abandoned", "caller_hangup", True),
        ("unresolved", "voicemail", "completed", True),
        ("all", "answered", "transferred", True),
        ("none", "abandoned", "caller_hangup", False),
    ],
)
async def test_policy_from_calls(
    engine: Engine, clock: WallClock, policy: str, disposition: str, outcome: str, filed: bool
) -> None:
    svc = service(engine, clock, from_calls=policy)
    number = await svc.record_call(call(clock, disposition=disposition, ivr_outcome=outcome))
    assert (number is not None) == filed
    assert svc.repo.count() == (1 if filed else 0)


async def test_a_call_that_never_reached_a_flow_or_queue_files_nothing(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock, from_calls="all")
    assert await svc.record_call(call(clock, flow=None, queue=None, transcript=())) is None


async def test_calling_again_within_the_window_updates_the_open_ticket(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock, dedupe_days=7)
    first = await svc.record_call(call(clock, "c1"))
    svc.repo.set_status(first, "pending", actor="agent:bob")  # type: ignore[arg-type]
    clock.advance(days=6)
    second = await svc.record_call(
        call(clock, "c2", transcript=(Turn("caller", "Still no refund. My email is ada@example.com.", 2.0),))
    )
    assert second == first
    assert svc.repo.count() == 1
    detail = svc.repo.get(first)  # type: ignore[arg-type]
    assert detail.ticket.status == "open"  # pending → open: the customer came back
    assert len(detail.conversations) == 2
    assert detail.ticket.entities == {"order": ["55123"], "email": ["ada@example.com"]}
    assert "Still no refund." in detail.ticket.summary and "refund for order 55123" in detail.ticket.summary


async def test_after_the_window_or_once_solved_a_new_ticket_is_filed(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock, dedupe_days=7)
    first = await svc.record_call(call(clock, "c1"))
    clock.advance(days=7, seconds=1)
    second = await svc.record_call(call(clock, "c2"))
    assert second not in (None, first)
    svc.repo.set_status(second, "solved", actor="cli")  # type: ignore[arg-type]
    clock.advance(hours=1)
    third = await svc.record_call(call(clock, "c3"))
    assert third not in (None, first, second)


async def test_dedupe_days_zero_always_files_a_new_ticket(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock, dedupe_days=0)
    a = await svc.record_call(call(clock, "c1"))
    b = await svc.record_call(call(clock, "c2"))
    assert a != b


async def test_the_flows_ticket_is_completed_by_the_post_call_hook_not_duplicated(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock, from_calls="all")
    draft = TicketDraft(
        subject="Refund request",
        body="Caller asked for a refund.",
        priority="low",
        tags=("ivr",),
        caller=CALLER,
        call_id="c1",
        transcript=(
            TranscriptEntry("ivr", "How can I help?", "ask"),
            TranscriptEntry("caller", "refund", "ask"),
        ),
        variables={"intent": "refund"},
    )
    ticket_id = await svc.create(draft)
    detail = svc.repo.get(int(ticket_id))
    assert (detail.ticket.subject, detail.ticket.priority, detail.ticket.category) == (
        "Refund request",
        "low",
        "refund",
    )
    assert [m.speaker for m in detail.conversations[0][1]] == ["system", "caller"]

    assert await svc.record_call(call(clock, "c1")) == int(ticket_id)
    detail = svc.repo.get(int(ticket_id))
    assert svc.repo.count() == 1 and len(detail.conversations) == 1
    assert [m.text for m in detail.conversations[0][1]][-1].startswith("I want a refund")  # the whole call


async def test_vip_customers_tickets_get_the_vip_priority(engine: Engine, clock: WallClock) -> None:
    CustomerRepo(engine).add("Ada", [CALLER], vip_level=4)
    svc = service(engine, clock, vip_priority="urgent")
    number = await svc.record_call(call(clock))
    detail = svc.repo.get(number)  # type: ignore[arg-type]
    assert (
        detail.ticket.priority == "urgent" and detail.customer is not None and detail.customer.name == "Ada"
    )


async def test_ivr_update_adds_a_note_tags_and_raises_priority(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock)
    ticket_id = await svc.create(TicketDraft(subject="Delivery late", caller=CALLER, call_id="c9"))
    await svc.update(
        ticket_id, TicketUpdate(body="Called again", priority="high", tags=("late",), recording="/r.wav")
    )
    detail = svc.repo.get(int(ticket_id))
    assert detail.ticket.priority == "high" and detail.ticket.tags == ["late"]
    changes = [(e.field, e.actor, e.old, e.new) for e in detail.events]
    assert ("note", "ivr", None, "Called again") in changes
    assert ("priority", "ivr", "normal", "high") in changes
    assert ("recording", "ivr", None, "/r.wav") in changes
    with pytest.raises(TicketNotFound):
        await svc.update("999", TicketUpdate(body="x"))
    with pytest.raises(TicketNotFound):
        await svc.update("abc", TicketUpdate(body="x"))


def test_status_changes_are_checked_and_audited(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock)
    ticket = svc.repo.create("Printer on fire", actor="cli")
    assert ticket.id is not None
    svc.repo.assign(ticket.id, "bob", actor="agent:sup")  # a new ticket someone takes becomes open
    svc.repo.set_status(ticket.id, "solved", actor="agent:bob")
    svc.repo.set_status(ticket.id, "closed", actor="agent:bob")
    with pytest.raises(InvalidTransition, match="cannot change status from closed to pending"):
        svc.repo.set_status(ticket.id, "pending", actor="agent:bob")
    svc.repo.set_status(ticket.id, "open", actor="agent:bob")  # reopen
    detail = svc.repo.get(ticket.id)
    assert [(e.field, e.old, e.new) for e in detail.events] == [
        ("created", None, "new"),
        ("assignee", None, "bob"),
        ("status", "new", "open"),
        ("status", "open", "solved"),
        ("status", "solved", "closed"),
        ("status", "closed", "open"),
    ]
    assert detail.ticket.solved_at is not None
