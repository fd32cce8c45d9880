"""SLA policies: first-response and resolution targets per priority, counted in business time.

Business time comes from a calendar in the IVR's :class:`~callcenter.ivr.schema.Schedule` shape
(timezone, weekly hours, holidays). Interval ends are real instants (local time → UTC through the zone),
so a 24-hour calendar counts 23 hours on the spring DST day and 25 on the autumn one.

Clocks (what this module decides):

* **First response** runs from creation until a person first responds: a note by someone who is not
  the system/IVR/bot, or a person setting the ticket to pending or solved. It does not run while the
  ticket is solved or closed.
* **Resolution** runs only while the ticket is ``new`` or ``open``. Pending (waiting for the customer),
  solved and closed pause it; the business time spent there is added to the due time when the ticket
  becomes active again (so a reopened ticket keeps what it had left, it does not restart).
* A priority change recomputes both due times from the creation time with the new targets (paused
  time still counted out); warnings and breaches that the new due times have not yet reached are
  cleared so they can be raised again against the new targets.
* The checker raises ``sla_warning`` when ``warning_percent`` of a target has elapsed and
  ``sla_breached`` when all of it has, once each per target. When both are found due in one check (the
  server was down), only the breach is raised.

Everything here is pure (the time is an argument) except :class:`SlaMonitor`, which reads due tickets
from SQL in a worker thread and runs the hooks; ``SlaMonitor.run`` is the asyncio task the app starts.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from callcenter.core.errors import ConfigError
from callcenter.core.logging import log_event
from callcenter.ivr.schema import Schedule, parse_days, parse_time_range

if TYPE_CHECKING:
    from callcenter.core.config import SlaActionSettings, SlaSettings
    from callcenter.store.crm import Ticket
    from callcenter.tickets.repo import TicketRepo

__all__ = [
    "ACTIVE_STATUSES",
    "BusinessCalendar",
    "SlaActions",
    "SlaClocks",
    "SlaEvent",
    "SlaHook",
    "SlaMonitor",
    "SlaPolicy",
    "SlaTarget",
    "is_person",
]

log = logging.getLogger(__name__)

ACTIVE_STATUSES = frozenset({"new", "open"})  # the resolution clock runs only here
_STOPPED = frozenset({"solved", "closed"})  # no clock runs here
_MACHINES = frozenset({"system", "ivr", "bot"})
_MAX_DAYS = 3 * 366  # a due time further out than this is treated as never (a calendar with no hours)
Target = Literal["first_response", "resolution"]
Kind = Literal["sla_warning", "sla_breached"]


def is_person(actor: str) -> bool:
    """Whether a ticket change by ``actor`` is a person's (an agent, a supervisor, the CLI) rather
    than the system's."""
    return actor not in _MACHINES


# -- the calendar ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessCalendar:
    """Business hours in a timezone. ``weekly[d]`` (Monday 0) holds the merged local ranges
    ``(start, end)`` of weekday ``d``, ``end`` None meaning midnight after; ``weekly`` None = open
    around the clock. Hashable: the intervals of a day are cached per calendar."""

    zone: ZoneInfo
    weekly: tuple[tuple[tuple[time, time | None], ...], ...] | None
    holidays: frozenset[date] = frozenset()
    _days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )  # a day's intervals, computed once (zone conversions are most of the cost)

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> BusinessCalendar:
        weekly: dict[int, list[tuple[time, time | None]]] | None = None
        if schedule.weekly is not None:
            weekly = {d: [] for d in range(7)}
            for key, ranges in schedule.weekly.items():
                for day in parse_days(key):
                    for text in ranges:
                        start, end = parse_time_range(text)
                        weekly[day].append((start, None if end == time.max else end))
            if not any(weekly.values()):
                raise ConfigError("tickets.sla.calendar.weekly: expected some business hours, got none")
        merged = tuple(_merge(weekly[d]) for d in range(7)) if weekly is not None else None
        return cls(ZoneInfo(schedule.timezone), merged, frozenset(schedule.holidays))

    @classmethod
    def always(cls, timezone: str = "UTC") -> BusinessCalendar:
        return cls(ZoneInfo(timezone), None)

    def intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The open intervals of local ``day`` as aware UTC instants, in order."""
        found = self._days.get(day)
        if found is None:
            if len(self._days) > 20_000:
                self._days.clear()
            found = self._days[day] = _intervals(self, day)
        return found

    def _local_day(self, when: datetime) -> date:
        return when.astimezone(self.zone).date()

    def add(self, start: datetime, seconds: float) -> datetime | None:
        """The instant when ``seconds`` of business time have passed after ``start`` (None: not
        within three years). A target that ends exactly at closing time is due at closing time."""
        remaining = max(0.0, seconds)
        if remaining == 0:
            return start
        day = self._local_day(start) - timedelta(days=1)  # UTC offsets can put start in yesterday's hours
        for _ in range(_MAX_DAYS):
            for a, b in self.intervals(day):
                if b <= start:
                    continue
                a = max(a, start)
                available = (b - a).total_seconds()
                if remaining <= available:
                    return a + timedelta(seconds=remaining)
                remaining -= available
            day += timedelta(days=1)
        return None

    def between(self, a: datetime, b: datetime) -> float:
        """Business seconds from ``a`` to ``b`` (negative when ``b`` is earlier)."""
        if b < a:
            return -self.between(b, a)
        total = 0.0
        day = self._local_day(a) - timedelta(days=1)
        last = self._local_day(b) + timedelta(days=1)
        while day <= last:
            for s, e in self.intervals(day):
                lo, hi = max(s, a), min(e, b)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total


def _merge(ranges: Iterable[tuple[time, time | None]]) -> tuple[tuple[time, time | None], ...]:
    out: list[tuple[time, time | None]] = []
    for start, end in sorted(ranges, key=lambda r: r[0]):
        if out and (out[-1][1] is None or start <= out[-1][1]):
            prev_start, prev_end = out[-1]
            out[-1] = (prev_start, None if prev_end is None or end is None else max(prev_end, end))
        else:
            out.append((start, end))
    return tuple(out)


def _intervals(calendar: BusinessCalendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    if day in calendar.holidays:
        return ()
    ranges: tuple[tuple[time, time | None], ...] = (
        ((time(0), None),) if calendar.weekly is None else calendar.weekly[day.weekday()]
    )
    next_day = day + timedelta(days=1)
    out = []
    for start, end in ranges:
        # fold=0: a local time in the spring gap is read with the offset before the change, a time
        # in the autumn overlap as its first occurrence — the zone decides, we never add hours by hand.
        a = datetime.combine(day, start, tzinfo=calendar.zone).astimezone(UTC)
        b_local = datetime.combine(next_day if end is None else day, end or time(0), tzinfo=calendar.zone)
        b = b_local.astimezone(UTC)
        if b > a:
            out.append((a, b))
    return tuple(out)


class SlaClocks(Protocol):
    """The ticket columns the SLA clocks read and set: a ``Ticket`` row, or the plain row the bulk
    post-call path builds before its INSERT (``callcenter.tickets.postcall``)."""

    status: str
    priority: str
    created_at: datetime
    first_response_due: datetime | None
    first_response_at: datetime | None
    resolution_due: datetime | None
    sla_paused_at: datetime | None
    sla_paused_s: float
    sla_fired: list[str]
    sla_next_at: datetime | None


# -- the policy --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlaTarget:
    first_response_s: float | None  # business seconds; None = no target
    resolution_s: float | None


@dataclass(frozen=True)
class SlaEvent:
    """A warning or breach, as handed to the hooks (reassign, notify supervisors, webhook)."""

    kind: Kind
    target: Target
    ticket: int
    due: datetime
    at: datetime
    priority: str
    status: str
    queue: str | None
    assignee: str | None
    actions: tuple[str, ...] = ()  # what the policy's on_warning/on_breach did, e.g. "queue=escalations"

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "target": self.target,
            "ticket": self.ticket,
            "due": self.due.isoformat(),
            "at": self.at.isoformat(),
            "priority": self.priority,
            "status": self.status,
            "queue": self.queue,
            "assignee": self.assignee,
            "actions": list(self.actions),
        }


@dataclass(frozen=True)
class SlaActions:
    """What a warning or breach does to its ticket (``tickets.sla.on_warning`` / ``on_breach``), in
    the shape of help-desk escalation rules: priority, queue (team), assignee, tags, internal note.
    Applied in the transaction that records the event, so each runs once per ticket and target, and a
    restart neither loses nor repeats them (``sla_fired`` is written with them)."""

    targets: frozenset[str] = frozenset({"first_response", "resolution"})
    priority: str | None = None  # "raise" = one step up, else at least this priority
    queue: str | None = None
    assignee: str | None = None
    unassign: bool = False
    tags: tuple[str, ...] = ()
    note: str | None = None

    @classmethod
    def from_settings(cls, settings: SlaActionSettings | None) -> SlaActions | None:
        if settings is None:
            return None
        return cls(
            frozenset(settings.targets), settings.priority, settings.queue, settings.assignee,
            settings.unassign, tuple(settings.tags), settings.note,
        )  # fmt: skip


@dataclass(frozen=True)
class _Point:
    at: datetime
    kind: Kind
    target: Target

    @property
    def key(self) -> str:
        return f"{self.target}:{self.kind.removeprefix('sla_')}"  # "resolution:breached"


@dataclass(frozen=True)
class SlaPolicy:
    calendar: BusinessCalendar
    targets: Mapping[str, SlaTarget]
    warning_ratio: float = 0.75  # None-free: 1.0 would make warnings coincide with breaches
    on_warning: SlaActions | None = None
    on_breach: SlaActions | None = None

    @classmethod
    def from_settings(cls, settings: SlaSettings) -> SlaPolicy:
        """Raises ConfigError (one line naming the key) for a bad calendar."""
        try:
            schedule = Schedule.model_validate(settings.calendar.model_dump())
        except ValidationError as exc:
            err = exc.errors()[0]
            at = str((err.get("ctx") or {}).get("at") or "")  # the IVR schema's key inside the model
            where = ".".join([*(str(p) for p in err["loc"]), *([at] if at else [])])
            raise ConfigError(f"tickets.sla.calendar{'.' + where if where else ''}: {err['msg']}") from None
        targets: dict[str, SlaTarget] = {
            name: SlaTarget(
                t.first_response_hours * 3600 if t.first_response_hours is not None else None,
                t.resolution_hours * 3600 if t.resolution_hours is not None else None,
            )
            for name, t in settings.targets.items()
        }
        return cls(
            BusinessCalendar.from_schedule(schedule),
            targets,
            settings.warning_percent / 100,
            SlaActions.from_settings(settings.on_warning),
            SlaActions.from_settings(settings.on_breach),
        )

    def actions_for(self, event: SlaEvent) -> SlaActions | None:
        """The configured actions for ``event`` (None: only the event itself)."""
        actions = self.on_breach if event.kind == "sla_breached" else self.on_warning
        return actions if actions is not None and event.target in actions.targets else None

    def target(self, priority: str) -> SlaTarget:
        return self.targets.get(priority, SlaTarget(None, None))

    # -- what the repository calls when a ticket is created or changed (mutates the ticket) -----------

    def start(self, ticket: SlaClocks, now: datetime) -> None:
        ticket.sla_paused_s = 0.0
        ticket.sla_paused_at = None if ticket.status in ACTIVE_STATUSES else now
        ticket.sla_fired = []
        self._plan(ticket, now)

    def changed(self, ticket: Ticket, what: str, old: Any, actor: str, now: datetime) -> None:
        """After ``ticket.<what>`` changed from ``old`` (status, priority) by ``actor``."""
        if what == "priority":
            self._plan(ticket, now, replan=True)
            return
        if what != "status":
            return
        new = ticket.status
        if new in ("pending", "solved") and is_person(actor) and ticket.first_response_at is None:
            ticket.first_response_at = now
        if old in ACTIVE_STATUSES and new not in ACTIVE_STATUSES:
            ticket.sla_paused_at = now
        elif old not in ACTIVE_STATUSES and new in ACTIVE_STATUSES:
            if ticket.sla_paused_at is not None:
                ticket.sla_paused_s = (ticket.sla_paused_s or 0.0) + max(
                    0.0, self.calendar.between(ticket.sla_paused_at, now)
                )
            ticket.sla_paused_at = None
        self._plan(ticket, now)

    def responded(self, ticket: SlaClocks, at: datetime, now: datetime) -> None:
        """A person answered the customer (a note, a call an agent took)."""
        if ticket.first_response_at is None:
            ticket.first_response_at = at
            self._plan(ticket, now)

    # -- the checker core --------------------------------------------------------------------------------

    def check(self, ticket: Ticket, now: datetime) -> list[SlaEvent]:
        """The events due for ``ticket`` at ``now``, each once; updates ``sla_fired`` and
        ``sla_next_at``."""
        fired = list(ticket.sla_fired or [])
        due = [p for p in self._points(ticket) if p.key not in fired and p.at <= now]
        events: list[SlaEvent] = []
        breached = {p.target for p in due if p.kind == "sla_breached"}
        for p in due:
            fired.append(p.key)
            if p.kind == "sla_warning" and p.target in breached:
                continue  # stale: the breach says more
            assert ticket.id is not None
            events.append(
                SlaEvent(
                    kind=p.kind,
                    target=p.target,
                    ticket=ticket.id,
                    due=self._due(ticket, p.target) or p.at,
                    at=now,
                    priority=ticket.priority,
                    status=ticket.status,
                    queue=ticket.queue,
                    assignee=ticket.assignee,
                )
            )
        ticket.sla_fired = fired
        ticket.sla_next_at = self._next(ticket)
        return events

    def _due(self, ticket: SlaClocks, target: Target) -> datetime | None:
        return ticket.first_response_due if target == "first_response" else ticket.resolution_due

    def _plan(self, ticket: SlaClocks, now: datetime, *, replan: bool = False) -> None:
        """Due times from the creation time, the priority's targets and the paused time."""
        created = ticket.created_at
        target = self.target(ticket.priority)
        cal = self.calendar
        ticket.first_response_due = (
            cal.add(created, target.first_response_s) if target.first_response_s is not None else None
        )
        ticket.resolution_due = (
            cal.add(created, target.resolution_s + (ticket.sla_paused_s or 0.0))
            if target.resolution_s is not None
            else None
        )
        if replan:  # forget what the new targets have not reached yet
            reached = {p.key for p in self._points(ticket, running_only=False) if p.at <= now}
            ticket.sla_fired = [k for k in ticket.sla_fired or [] if k in reached]
        ticket.sla_next_at = self._next(ticket)

    def _points(self, ticket: SlaClocks, *, running_only: bool = True) -> list[_Point]:
        created = ticket.created_at
        target = self.target(ticket.priority)
        points: list[_Point] = []
        first_running = ticket.first_response_at is None and ticket.status not in _STOPPED
        if target.first_response_s is not None and (first_running or not running_only):
            warn = self.calendar.add(created, target.first_response_s * self.warning_ratio)
            if warn is not None:
                points.append(_Point(warn, "sla_warning", "first_response"))
            if ticket.first_response_due is not None:
                points.append(_Point(ticket.first_response_due, "sla_breached", "first_response"))
        if target.resolution_s is not None and (ticket.status in ACTIVE_STATUSES or not running_only):
            paused = ticket.sla_paused_s or 0.0
            warn = self.calendar.add(created, target.resolution_s * self.warning_ratio + paused)
            if warn is not None:
                points.append(_Point(warn, "sla_warning", "resolution"))
            if ticket.resolution_due is not None:
                points.append(_Point(ticket.resolution_due, "sla_breached", "resolution"))
        return points

    def _next(self, ticket: SlaClocks) -> datetime | None:
        fired = set(ticket.sla_fired or [])
        pending = [p.at for p in self._points(ticket) if p.key not in fired]
        return min(pending) if pending else None


# -- the periodic checker ----------------------------------------------------------------------------------

SlaHook = Callable[[SlaEvent], Awaitable[None] | None]


@dataclass
class SlaMonitor:
    """Finds tickets whose next SLA moment has come, records and logs each warning/breach once, and
    hands the events to ``hooks`` (reassign, notify supervisors live, webhooks subscribe here)."""

    repo: TicketRepo
    policy: SlaPolicy
    now: Callable[[], datetime]
    hooks: list[SlaHook] = field(default_factory=list)
    batch: int = 500

    def check_sync(self, now: datetime) -> list[SlaEvent]:
        """One pass at ``now`` (blocking SQL); returns the events raised."""
        events: list[SlaEvent] = []
        while True:
            found = self.repo.sla_check(self.policy, now, limit=self.batch)
            events.extend(found.events)
            if found.tickets < self.batch:
                break
        for event in events:
            log_event(
                log,
                event.kind,
                level=logging.WARNING,
                ticket=event.ticket,
                target=event.target,
                due=event.due.isoformat(),
                priority=event.priority,
                queue=event.queue,
                assignee=event.assignee,
            )
        return events

    async def check(self) -> list[SlaEvent]:
        events = await asyncio.to_thread(self.check_sync, self.now())
        for event in events:
            for hook in list(self.hooks):
                try:
                    result = hook(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # a broken subscriber must not stop the checker or the others
                    log_event(log, "sla_hook_failed", level=logging.ERROR, ticket=event.ticket, exc_info=True)
        return events

    async def run(
        self, interval_s: float, *, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    ) -> None:
        """Check every ``interval_s`` until cancelled; a failing pass is logged and retried."""
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log_event(log, "sla_check_failed", level=logging.ERROR, exc_info=True)
            await sleep(interval_s)
