"""SLA escalation policy: a warning or breach changes the ticket (once, audited, across restarts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from ticket_clock import WallClock

from callcenter.core.config import TicketsSettings, load_settings
from callcenter.core.errors import ConfigError
from callcenter.tickets import SlaMonitor, TicketService

# Office hours in Berlin: Mon-Fri 09:00-17:00; normal tickets: first response 8 h, resolution 40 h.
OFFICE = {
    "calendar": {
        "timezone": "Europe/Berlin", "weekly": {"mon-fri": ["09:00-17:00"]}, "holidays": ["2026-05-14"]
    },
    "targets": {
        "normal": {"first_response_hours": 8, "resolution_hours": 40},
        "high": {"first_response_hours": 4, "resolution_hours": 16},
        "urgent": {"first_response_hours": 1, "resolution_hours": 4},
    },
    "warning_percent": 75,
    "on_warning": {"targets": ["first_response"], "tags": ["sla-warning"]},
    "on_breach": {
        "priority": "raise", "queue": "escalations", "unassign": True, "tags": ["sla-breached"],
        "note": "Escalated: SLA breached",
    },
}  # fmt: skip


def berlin(day: int, hour: int) -> datetime:
    return datetime(2026, 5, day, hour - 2, 0, tzinfo=UTC)  # May: CEST, UTC+2


def parts(
    clock: WallClock, engine: Engine, sla: dict[str, object] = OFFICE
) -> tuple[TicketService, SlaMonitor]:
    """A service and checker as a (re)started server builds them on ``engine``."""
    svc = TicketService(engine, TicketsSettings.model_validate({"sla": sla}), now=clock)
    assert svc.sla is not None
    return svc, SlaMonitor(svc.repo, svc.sla, now=clock)


def sla_events(svc: TicketService, number: int) -> list[tuple[str, str | None]]:
    return [(e.field, e.new) for e in svc.repo.get(number).events if e.actor == "sla"]


def test_warning_and_breach_act_once_in_business_time_and_not_again_after_a_restart(
    engine: Engine, clock: WallClock
) -> None:
    clock.now = berlin(8, 16)  # Friday 16:00: one business hour left this week
    svc, mon = parts(clock, engine)
    number = svc.repo.create("Refund missing", queue="billing").number
    svc.repo.assign(number, "bob", actor="cli")

    # 75 % of 8 h = 6 business hours: Fri 16-17 + Mon 09-14. Saturday and Monday morning: nothing yet.
    for now in (berlin(9, 12), berlin(11, 13)):
        assert mon.check_sync(now) == []
    [warning] = mon.check_sync(berlin(11, 14))
    assert (warning.kind, warning.target, warning.actions) == (
        "sla_warning",
        "first_response",
        ("tags+=sla-warning",),
    )
    t = svc.repo.get(number).ticket
    assert (t.tags, t.priority, t.queue, t.assignee) == (["sla-warning"], "normal", "billing", "bob")
    assert mon.check_sync(berlin(11, 15)) == []  # the next tick: nothing repeated

    svc2, mon2 = parts(clock, engine)  # the server restarted before the breach
    [breach] = mon2.check_sync(berlin(11, 16))  # 8 business hours: Monday 16:00
    assert (breach.kind, breach.target) == ("sla_breached", "first_response")
    assert breach.actions == (
        "priority=high",
        "queue=escalations",
        "unassigned",
        "tags+=sla-breached",
        "note",
    )
    assert (breach.priority, breach.queue, breach.assignee) == ("high", "escalations", None)
    t = svc2.repo.get(number).ticket
    assert (t.priority, t.queue, t.assignee) == ("high", "escalations", None)
    assert t.tags == ["sla-warning", "sla-breached"]
    assert sla_events(svc2, number) == [
        ("sla_warning", "first_response"),
        ("tags", '["sla-warning"]'),
        ("sla_breached", "first_response"),
        ("priority", "high"),
        ("queue", "escalations"),
        ("assignee", None),
        ("tags", '["sla-warning", "sla-breached"]'),
        ("note", "Escalated: SLA breached"),
    ]

    # Raising the priority shortened the targets; what was raised stays raised: no second escalation.
    svc3, mon3 = parts(clock, engine)
    later = mon3.check_sync(berlin(12, 12))  # Tuesday: Fri 1 + Mon 8 + Tue 3 h
    assert [(e.kind, e.target) for e in later] == [("sla_warning", "resolution")]  # high: 12 of 16 h
    assert later[0].actions == ()  # on_warning covers first response only
    assert svc3.repo.get(number).ticket.priority == "high"


def test_a_holiday_is_not_business_time_for_the_escalation(engine: Engine, clock: WallClock) -> None:
    sla = {**OFFICE, "on_warning": None}
    clock.now = berlin(13, 16).replace(minute=30)  # Wednesday 16:30; Thursday 14 May is a holiday
    svc, mon = parts(clock, engine, sla)
    number = svc.repo.create("Invoice wrong", priority="urgent").number  # first response: 1 h
    assert mon.check_sync(berlin(14, 16)) == []  # 30 min left, the holiday does not count
    [breach] = mon.check_sync(berlin(15, 9).replace(minute=30))  # Friday 09:30 (the stale warning: skipped)
    assert (breach.kind, breach.target) == ("sla_breached", "first_response")
    assert breach.actions == ("queue=escalations", "tags+=sla-breached", "note")  # urgent is the top
    t = svc.repo.get(number).ticket
    assert (t.priority, t.queue) == ("urgent", "escalations")


def test_priority_names_only_raise_and_assignee_reassigns(engine: Engine, clock: WallClock) -> None:
    sla = {
        "calendar": {"timezone": "UTC"},
        "targets": {"low": {"resolution_hours": 1}, "high": {"resolution_hours": 1}},
        "on_breach": {"priority": "normal", "assignee": "sue"},
    }
    svc, mon = parts(clock, engine, sla)
    low = svc.repo.create("a", priority="low").number
    high = svc.repo.create("b", priority="high").number
    events = {e.ticket: e for e in mon.check_sync(clock.now.replace(hour=11))}
    assert events[low].actions == ("priority=normal", "assignee=sue")
    assert events[high].actions == ("assignee=sue",)  # never lowered
    assert svc.repo.get(high).ticket.priority == "high"


def test_the_shipped_config_and_bad_policies() -> None:
    assert load_settings().tickets.sla.on_breach is None  # config.yaml: events only, as before
    with pytest.raises((ConfigError, ValueError), match="assignee or unassign"):
        TicketsSettings.model_validate({"sla": {"on_breach": {"assignee": "bob", "unassign": True}}})
    with pytest.raises((ConfigError, ValueError)):
        TicketsSettings.model_validate({"sla": {"on_warning": {"priority": "asap"}}})
