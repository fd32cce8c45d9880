"""SLA due times on tickets, the pending pause, first response, and the checker raising each event once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from ticket_clock import WallClock

from callcenter.core.config import TicketsSettings
from callcenter.tickets import HandledCall, SlaEvent, SlaMonitor, TicketService, Turn

AROUND_THE_CLOCK = {
    "calendar": {"timezone": "UTC"},
    "targets": {
        "normal": {"first_response_hours": 4, "resolution_hours": 10},
        "urgent": {"first_response_hours": 1, "resolution_hours": 2},
    },
    "warning_percent": 80,
}


def service(engine: Engine, clock: WallClock, sla: dict[str, object] | None = None) -> TicketService:
    settings = TicketsSettings.model_validate({"sla": sla or AROUND_THE_CLOCK})
    return TicketService(engine, settings, now=clock)


def monitor(svc: TicketService, clock: WallClock) -> SlaMonitor:
    assert svc.sla is not None
    return SlaMonitor(svc.repo, svc.sla, now=clock)


def test_a_new_ticket_gets_due_times_from_its_priority(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock)
    t = svc.repo.create("Kettle leaks", priority="normal")
    assert t.first_response_due == clock.now + timedelta(hours=4)
    assert t.resolution_due == clock.now + timedelta(hours=10)
    clock.advance(minutes=30)
    t = svc.repo.set_priority(t.number, "urgent", actor="api:sue")
    # Recomputed from the creation time, not from the change.
    assert t.first_response_due == clock.now - timedelta(minutes=30) + timedelta(hours=1)
    assert t.resolution_due == clock.now - timedelta(minutes=30) + timedelta(hours=2)
    t = svc.repo.set_priority(t.number, "low", actor="api:sue")
    assert (t.first_response_due, t.resolution_due) == (None, None)  # low has no targets here


def test_business_hours_decide_the_due_time(engine: Engine, clock: WallClock) -> None:
    office = {
        "calendar": {"timezone": "Europe/Berlin", "weekly": {"mon-fri": ["09:00-17:00"]}},
        "targets": {"normal": {"first_response_hours": 2}},
    }
    svc = service(engine, clock, office)
    clock.now = datetime(2026, 5, 8, 14, 0, tzinfo=UTC)  # Friday 16:00 in Berlin
    t = svc.repo.create("Invoice wrong")
    assert t.first_response_due == datetime(2026, 5, 11, 8, 0, tzinfo=UTC)  # Monday 10:00 in Berlin
    assert t.resolution_due is None


def test_warning_then_breach_each_raised_once_recorded_and_handed_to_hooks(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock)
    number = svc.repo.create("Refund missing", queue="billing").number
    mon = monitor(svc, clock)
    seen: list[SlaEvent] = []
    async_seen: list[str] = []

    async def async_hook(event: SlaEvent) -> None:
        async_seen.append(event.kind)

    def broken_hook(event: SlaEvent) -> None:
        raise RuntimeError("webhook down")

    mon.hooks.extend([broken_hook, seen.append, async_hook])

    async def check_at(hours: float) -> list[tuple[str, str]]:
        clock.now = start + timedelta(hours=hours)
        return [(e.kind, e.target) for e in await mon.check()]

    start = clock.now
    assert asyncio.run(check_at(3)) == []
    assert asyncio.run(check_at(3.3)) == [("sla_warning", "first_response")]  # 80 % of 4 h = 3.2 h
    assert asyncio.run(check_at(3.5)) == []  # once
    assert asyncio.run(check_at(4)) == [("sla_breached", "first_response")]
    assert asyncio.run(check_at(8)) == [("sla_warning", "resolution")]
    assert asyncio.run(check_at(10)) == [("sla_breached", "resolution")]
    assert asyncio.run(check_at(48)) == []
    assert [e.kind for e in seen] == async_seen == ["sla_warning", "sla_breached"] * 2
    assert seen[0].queue == "billing" and seen[0].due == start + timedelta(hours=4)
    events = [(e.actor, e.field, e.new) for e in svc.repo.get(number).events if e.actor == "sla"]
    assert events == [
        ("sla", "sla_warning", "first_response"),
        ("sla", "sla_breached", "first_response"),
        ("sla", "sla_warning", "resolution"),
        ("sla", "sla_breached", "resolution"),
    ]
    assert svc.repo.get(number).ticket.sla_next_at is None  # nothing left to look at


def test_a_late_check_raises_the_breach_without_the_stale_warning(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock)
    svc.repo.create("Order lost", priority="urgent")
    clock.advance(hours=1, minutes=5)
    events = monitor(svc, clock).check_sync(clock.now)
    assert [(e.kind, e.target) for e in events] == [("sla_breached", "first_response")]
    clock.advance(hours=5)
    assert [(e.kind, e.target) for e in monitor(svc, clock).check_sync(clock.now)] == [
        ("sla_breached", "resolution")
    ]


def test_a_persons_note_is_the_first_response_the_ivrs_is_not(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock)
    number = svc.repo.create("Password reset").number
    clock.advance(hours=1)
    svc.repo.add_note(number, "caller left a voicemail", actor="ivr")
    assert svc.repo.get(number).ticket.first_response_at is None
    clock.advance(hours=1)
    t = svc.repo.add_note(number, "Sent a reset link.", actor="agent:al")
    assert t.first_response_at == clock.now
    clock.advance(hours=7)
    events = monitor(svc, clock).check_sync(clock.now)
    assert [(e.kind, e.target) for e in events] == [("sla_warning", "resolution")]  # no first-response ones


def test_pending_pauses_the_resolution_clock(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock)
    number = svc.repo.create("Delivery late").number
    created = clock.now
    clock.advance(hours=2)
    t = svc.repo.set_status(number, "pending", actor="agent:al")  # asked the customer: also a response
    assert t.first_response_at == clock.now
    clock.advance(hours=20)
    assert monitor(svc, clock).check_sync(clock.now) == []  # 22 h after creation, but paused for 20
    t = svc.repo.set_status(number, "open", actor="system")  # the customer answered
    assert t.resolution_due == created + timedelta(hours=10 + 20)
    clock.advance(hours=5, minutes=59)
    assert monitor(svc, clock).check_sync(clock.now) == []  # 7 h 59 of 10 counted: warning due at 8 h
    clock.advance(minutes=1)
    assert [e.kind for e in monitor(svc, clock).check_sync(clock.now)] == ["sla_warning"]


def test_solved_stops_the_clocks_and_a_reopened_ticket_keeps_what_it_had_left(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock)
    number = svc.repo.create("Wrong item").number
    created = clock.now
    clock.advance(hours=3)
    svc.repo.set_status(number, "solved", actor="agent:al")
    clock.advance(days=3)
    assert monitor(svc, clock).check_sync(clock.now) == []
    t = svc.repo.set_status(number, "open", actor="agent:al")  # reopened
    assert t.resolution_due == created + timedelta(days=3, hours=10)  # 7 h left


def test_a_lower_priority_clears_what_it_has_not_reached_so_it_can_warn_again(
    engine: Engine, clock: WallClock
) -> None:
    svc = service(engine, clock)
    number = svc.repo.create("Urgent refund", priority="urgent").number
    clock.advance(minutes=50)
    assert [e.kind for e in monitor(svc, clock).check_sync(clock.now)] == ["sla_warning"]
    t = svc.repo.set_priority(number, "normal", actor="api:sue")
    assert t.sla_fired == [] and t.sla_next_at == t.created_at + timedelta(hours=3.2)
    clock.advance(hours=2.5)
    assert [(e.kind, e.target) for e in monitor(svc, clock).check_sync(clock.now)] == [
        ("sla_warning", "first_response")
    ]


def test_an_answered_call_is_the_first_response(engine: Engine, clock: WallClock) -> None:
    svc = TicketService(
        engine, TicketsSettings.model_validate({"from_calls": "all", "sla": AROUND_THE_CLOCK}), now=clock
    )
    call = HandledCall(
        call_id="c9", caller="+4930123456", started_at=clock.now - timedelta(minutes=4), ended_at=clock.now,
        disposition="answered", flow="hotline_en", queue="support", agent="al",
        transcript=(Turn("caller", "My parcel never came.", 1.0),),
    )  # fmt: skip
    number = svc.record_call_sync(call)
    assert number is not None
    assert svc.repo.get(number).ticket.first_response_at == clock.now


def test_sla_disabled_gives_no_due_times(engine: Engine, clock: WallClock) -> None:
    svc = service(engine, clock, {"enabled": False})
    assert svc.sla is None
    t = svc.repo.create("Anything")
    assert (t.first_response_due, t.resolution_due, t.sla_next_at) == (None, None, None)


def test_the_run_loop_checks_each_interval_and_survives_a_failing_pass(
    engine: Engine, clock: WallClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(engine, clock)
    svc.repo.create("Printer on fire", priority="urgent")
    mon = monitor(svc, clock)
    raised: list[str] = []
    mon.hooks.append(lambda e: raised.append(e.kind))
    real = mon.check_sync
    calls = 0

    def flaky(now: datetime) -> list[SlaEvent]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database restarting")
        return real(now)

    monkeypatch.setattr(mon, "check_sync", flaky)
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(minutes=25)  # checks at 0 (fails), 25, 50 and 75 minutes
        if len(waits) == 4:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(mon.run(30.0, sleep=fake_sleep))
    assert waits == [30.0] * 4
    assert raised == ["sla_warning", "sla_breached"]  # urgent first response: warned at 48 min, due at 1 h
