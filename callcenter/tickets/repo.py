"""Tickets in SQL: every change in one transaction with its audit row (``ticket_event``).

Synchronous: the CLI calls it directly, the server from worker threads (:mod:`callcenter.tickets.service`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import String, case, cast, delete, func, insert, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from callcenter.core.errors import CallcenterError
from callcenter.store.crm import (
    PRIORITIES,
    Conversation,
    Customer,
    Feedback,
    Message,
    Ticket,
    TicketEvent,
)
from callcenter.store.db import utcnow
from callcenter.tickets.sla import SlaActions, SlaEvent, SlaPolicy, is_person
from callcenter.tickets.states import OPEN_STATUSES, STATUSES, check_transition

__all__ = [
    "CsatAverage",
    "MessageIn",
    "SlaCheck",
    "TicketDetail",
    "TicketFilter",
    "TicketError",
    "TicketNotFound",
    "TicketRepo",
    "conversation_public",
    "event_public",
    "higher_priority",
    "ticket_public",
]


class TicketError(CallcenterError, ValueError):
    """A ticket change that is not acceptable (bad priority, empty subject, …)."""


class TicketNotFound(TicketError, LookupError):
    """No ticket with that number."""


@dataclass(frozen=True)
class MessageIn:
    speaker: str  # caller, agent, system or bot
    text: str
    at: datetime
    confidence: float | None = None


@dataclass
class TicketDetail:
    ticket: Ticket
    customer: Customer | None
    events: list[TicketEvent] = field(default_factory=list)
    conversations: list[tuple[Conversation, list[Message]]] = field(default_factory=list)


@dataclass(frozen=True)
class TicketFilter:
    """What a ticket list is narrowed to. ``visible_to`` (agents' view): tickets assigned to one of
    ``assignees`` or in one of ``queues``; None = everything."""

    status: Sequence[str] = ()
    priority: Sequence[str] = ()
    assignee: str | None = None
    queue: str | None = None
    customer_id: int | None = None
    tag: str | None = None
    text: str | None = None  # in the subject (case-insensitive)
    sla_breached: bool | None = None
    visible_to: tuple[frozenset[str], frozenset[str]] | None = None  # (assignees, queues)


@dataclass(frozen=True)
class SlaCheck:
    tickets: int  # how many tickets were looked at
    events: list[SlaEvent]


@dataclass(frozen=True)
class CsatAverage:
    key: str | None  # the agent or the queue (None: calls without one)
    count: int
    average: float  # on the 1-5 scale feedback is stored in
    satisfied: float  # share of 4s and 5s, 0-1 (the usual CSAT percentage)


def higher_priority(a: str, b: str) -> str:
    order: tuple[str, ...] = PRIORITIES
    return max(a, b, key=order.index)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def ticket_public(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "queue": ticket.queue,
        "assignee": ticket.assignee,
        "tags": list(ticket.tags or []),
        "category": ticket.category,
        "customer_id": ticket.customer_id,
        "summary": ticket.summary,
        "entities": dict(ticket.entities or {}),
        "created_at": _iso(ticket.created_at),
        "updated_at": _iso(ticket.updated_at),
        "solved_at": _iso(ticket.solved_at),
        "sla": {
            "first_response_due": _iso(ticket.first_response_due),
            "first_response_at": _iso(ticket.first_response_at),
            "resolution_due": _iso(ticket.resolution_due),
            "paused": ticket.sla_paused_at is not None and ticket.resolution_due is not None,
            "raised": list(ticket.sla_fired or []),
        },
    }


def event_public(event: TicketEvent) -> dict[str, Any]:
    return {
        "at": _iso(event.at),
        "actor": event.actor,
        "field": event.field,
        "old": event.old,
        "new": event.new,
    }


def conversation_public(conversation: Conversation, messages: Sequence[Message]) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "channel": conversation.channel,
        "call_id": conversation.call_id,
        "address": conversation.address,
        "started_at": _iso(conversation.started_at),
        "ended_at": _iso(conversation.ended_at),
        "queue": conversation.queue,
        "agent": conversation.agent,
        "intent": conversation.intent,
        "language": conversation.language,
        "disposition": conversation.disposition,
        "recording": conversation.recording,
        "messages": [
            {"speaker": m.speaker, "text": m.text, "at": _iso(m.at), "confidence": m.confidence}
            for m in messages
        ],
    }


class TicketRepo:
    def __init__(
        self, engine: Engine, *, now: Callable[[], datetime] = utcnow, sla: SlaPolicy | None = None
    ) -> None:
        self.engine = engine
        self.now = now  # wall clock (aware UTC); tests pass a fake one
        self.sla = sla  # None: tickets get no due times

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- building blocks inside one session (the service composes them into one transaction) -------------

    @staticmethod
    def load(session: Session, number: int, *, for_update: bool = False) -> Ticket:
        query = select(Ticket).where(Ticket.id == number)
        if for_update and session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # two agents changing one ticket: the second waits
        ticket = session.exec(query).first()
        if ticket is None:
            raise TicketNotFound(f"no ticket {number}")
        return ticket

    def log(
        self, session: Session, ticket: Ticket, actor: str, what: str, old: Any = None, new: Any = None
    ) -> None:
        assert ticket.id is not None
        session.add(
            TicketEvent(
                ticket_id=ticket.id, at=self.now(), actor=actor, field=what, old=_text(old), new=_text(new)
            )
        )

    def insert(self, session: Session, ticket: Ticket, actor: str) -> Ticket:
        if not ticket.subject.strip():
            raise TicketError("subject: expected a non-empty subject")
        if ticket.priority not in PRIORITIES:
            raise TicketError(f"priority {ticket.priority!r}: expected one of {', '.join(PRIORITIES)}")
        ticket.subject = ticket.subject.strip()[:200]
        ticket.created_at = ticket.updated_at = self.now()
        if self.sla is not None:
            self.sla.start(ticket, ticket.created_at)
        session.add(ticket)
        session.flush()
        self.log(session, ticket, actor, "created", None, ticket.status)
        return ticket

    def change(self, session: Session, ticket: Ticket, actor: str, what: str, new: Any) -> bool:
        """Set one field, with its audit row; False (and no row) when it already had that value."""
        old = getattr(ticket, what)
        if old == new:
            return False
        if what == "status":
            check_transition(old, new)
            if new == "solved":
                ticket.solved_at = self.now()
        elif what == "priority" and new not in PRIORITIES:
            raise TicketError(f"priority {new!r}: expected one of {', '.join(PRIORITIES)}")
        setattr(ticket, what, list(new) if isinstance(new, list | tuple) else new)
        ticket.updated_at = self.now()
        if self.sla is not None and what in ("status", "priority"):
            self.sla.changed(ticket, what, old, actor, ticket.updated_at)
        self.log(session, ticket, actor, what, old, new)
        return True

    def responded(self, session: Session, ticket: Ticket, at: datetime) -> None:
        """A person answered the customer at ``at`` (the first time stops the first-response clock)."""
        if self.sla is not None:
            self.sla.responded(ticket, at, self.now())
        elif ticket.first_response_at is None:
            ticket.first_response_at = at
        session.add(ticket)

    def add_tags(self, session: Session, ticket: Ticket, actor: str, tags: Iterable[str]) -> None:
        current = list(ticket.tags or [])
        merged = current + [t for t in dict.fromkeys(tags) if t and t not in current]
        if merged != current:
            self.change(session, ticket, actor, "tags", merged)

    def note(self, session: Session, ticket: Ticket, actor: str, text: str, what: str = "note") -> None:
        ticket.updated_at = self.now()
        if what == "note" and is_person(actor):
            self.responded(session, ticket, ticket.updated_at)
        self.log(session, ticket, actor, what, None, text)

    @staticmethod
    def find_open_for_customer(session: Session, customer_id: int, since: datetime) -> Ticket | None:
        """The customer's most recently updated open ticket updated at or after ``since``."""
        query = (
            select(Ticket)
            .where(
                Ticket.customer_id == customer_id,
                col(Ticket.status).in_(sorted(OPEN_STATUSES)),
                col(Ticket.updated_at) >= since,
            )
            .order_by(col(Ticket.updated_at).desc(), col(Ticket.id).desc())
        )
        return session.exec(query.limit(1)).first()

    def replace_messages(self, session: Session, conversation_id: int, messages: Sequence[MessageIn]) -> None:
        session.execute(delete(Message).where(col(Message.conversation_id) == conversation_id))
        if messages:  # one executemany, no ORM objects: a transcript is many rows (ticket_create bench)
            session.execute(
                insert(Message),
                [
                    {"conversation_id": conversation_id, "speaker": m.speaker, "text": m.text, "at": m.at,
                     "confidence": m.confidence}
                    for m in messages
                ],
            )  # fmt: skip

    # -- one call = one transaction ----------------------------------------------------------------------

    def get(self, number: int) -> TicketDetail:
        with self.session() as session:
            ticket = self.load(session, number)
            customer = session.get(Customer, ticket.customer_id) if ticket.customer_id is not None else None
            events = session.exec(
                select(TicketEvent).where(TicketEvent.ticket_id == number).order_by(col(TicketEvent.id))
            )
            detail = TicketDetail(ticket, customer, list(events))
            conversations = session.exec(
                select(Conversation)
                .where(Conversation.ticket_id == number)
                .order_by(col(Conversation.started_at))
            )
            for conv in conversations:
                messages = session.exec(
                    select(Message)
                    .where(Message.conversation_id == conv.id)
                    .order_by(col(Message.at), col(Message.id))
                )
                detail.conversations.append((conv, list(messages)))
            return detail

    def list_tickets(
        self,
        *,
        status: Sequence[str] = (),
        assignee: str | None = None,
        queue: str | None = None,
        customer_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
        where: TicketFilter | None = None,
    ) -> list[Ticket]:
        """Newest changes first; ``where`` narrows further (the keyword filters are its shorthand)."""
        f = _merge_filter(where, status, assignee, queue, customer_id)
        query = self._filtered(select(Ticket), f, self.now())
        query = (
            query.order_by(col(Ticket.updated_at).desc(), col(Ticket.id).desc()).offset(offset).limit(limit)
        )
        with self.session() as session:
            return list(session.exec(query))

    def count(self, *, status: Sequence[str] = (), where: TicketFilter | None = None) -> int:
        f = _merge_filter(where, status, None, None, None)
        query = self._filtered(select(func.count()).select_from(Ticket), f, self.now())
        with self.session() as session:
            return int(session.exec(query).one())

    @staticmethod
    def _filtered(query: SelectOfScalar[Any], f: TicketFilter, now: datetime) -> SelectOfScalar[Any]:
        for name, values, allowed in (("status", f.status, STATUSES), ("priority", f.priority, PRIORITIES)):
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise TicketError(f"{name} {unknown[0]!r}: expected one of {', '.join(allowed)}")
        if f.status:
            query = query.where(col(Ticket.status).in_(list(f.status)))
        if f.priority:
            query = query.where(col(Ticket.priority).in_(list(f.priority)))
        if f.assignee is not None:
            query = query.where(Ticket.assignee == f.assignee)
        if f.queue is not None:
            query = query.where(Ticket.queue == f.queue)
        if f.customer_id is not None:
            query = query.where(Ticket.customer_id == f.customer_id)
        if f.tag:
            # Tags are a JSON list (written by json.dumps, ASCII-escaped): its text holds the tag quoted.
            needle = json.dumps(f.tag).replace("\\", "\\\\")
            needle = needle.replace("%", "\\%").replace("_", "\\_")
            query = query.where(cast(Ticket.tags, String).like(f"%{needle}%", escape="\\"))
        if f.text:
            like = "%" + f.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(func.lower(Ticket.subject).like(like, escape="\\"))
        if f.sla_breached is not None:
            breached = cast(Ticket.sla_fired, String).like("%:breached%")
            query = query.where(breached if f.sla_breached else ~breached)
        if f.visible_to is not None:
            assignees, queues = f.visible_to
            query = query.where(
                or_(col(Ticket.assignee).in_(sorted(assignees)), col(Ticket.queue).in_(sorted(queues)))
            )
        return query

    def create(
        self,
        subject: str,
        *,
        body: str = "",
        priority: str = "normal",
        queue: str | None = None,
        tags: Sequence[str] = (),
        category: str | None = None,
        customer_id: int | None = None,
        actor: str = "system",
    ) -> Ticket:
        with self.session() as session:
            ticket = Ticket(
                subject=subject, body=body, priority=priority, queue=queue, tags=list(dict.fromkeys(tags)),
                category=category, customer_id=customer_id,
            )  # fmt: skip
            self.insert(session, ticket, actor)
            session.commit()
            return ticket

    def set_status(self, number: int, status: str, *, actor: str) -> Ticket:
        """Change the status (the transition table decides); raises InvalidTransition / TicketNotFound."""
        return self._update(number, actor, status=status)

    def assign(self, number: int, assignee: str | None, *, actor: str) -> Ticket:
        """Assign to an agent (None: unassign); a new ticket becomes open when someone takes it."""
        with self.session() as session:
            ticket = self.load(session, number, for_update=True)
            self.change(session, ticket, actor, "assignee", assignee or None)
            if assignee and ticket.status == "new":
                self.change(session, ticket, actor, "status", "open")
            session.commit()
            return ticket

    def set_priority(self, number: int, priority: str, *, actor: str) -> Ticket:
        return self._update(number, actor, priority=priority)

    def set_queue(self, number: int, queue: str | None, *, actor: str) -> Ticket:
        return self._update(number, actor, queue=queue)

    def tag(self, number: int, tags: Sequence[str], *, actor: str) -> Ticket:
        with self.session() as session:
            ticket = self.load(session, number, for_update=True)
            self.add_tags(session, ticket, actor, tags)
            session.commit()
            return ticket

    def add_note(self, number: int, text: str, *, actor: str) -> Ticket:
        with self.session() as session:
            ticket = self.load(session, number, for_update=True)
            self.note(session, ticket, actor, text)
            session.commit()
            return ticket

    def update(
        self,
        number: int,
        *,
        actor: str,
        status: str | None = None,
        priority: str | None = None,
        queue: str | None = None,
        assignee: str | None = None,
        unassign: bool = False,
        add_tags: Sequence[str] = (),
        remove_tags: Sequence[str] = (),
        check: Callable[[Ticket], None] | None = None,
    ) -> Ticket:
        """Several changes in one transaction (each with its audit row). ``check(ticket)`` runs on the
        current row first (the API's visibility rule) and may raise."""
        with self.session() as session:
            ticket = self.load(session, number, for_update=True)
            if check is not None:
                check(ticket)
            if assignee is not None or unassign:
                self.change(session, ticket, actor, "assignee", None if unassign else assignee)
                if assignee and ticket.status == "new" and status is None:
                    self.change(session, ticket, actor, "status", "open")
            if status is not None:
                self.change(session, ticket, actor, "status", status)
            if priority is not None:
                self.change(session, ticket, actor, "priority", priority)
            if queue is not None:
                self.change(session, ticket, actor, "queue", queue or None)
            if add_tags or remove_tags:
                current = list(ticket.tags or [])
                kept = [t for t in current if t not in set(remove_tags)]
                merged = kept + [t for t in dict.fromkeys(add_tags) if t and t not in kept]
                if merged != current:
                    self.change(session, ticket, actor, "tags", merged)
            session.add(ticket)
            session.commit()
            return ticket

    # -- SLA checker and CSAT ------------------------------------------------------------------------------

    def sla_check(self, policy: SlaPolicy, now: datetime, *, limit: int = 500) -> SlaCheck:
        """Tickets whose next SLA moment is due at ``now``: raise what is due, record it as a ticket
        event (actor ``sla``) and move their next moment on — one transaction."""
        query = (
            select(Ticket)
            .where(col(Ticket.sla_next_at).is_not(None), col(Ticket.sla_next_at) <= now)
            .order_by(col(Ticket.sla_next_at), col(Ticket.id))
            .limit(limit)
        )
        events: list[SlaEvent] = []
        with self.session() as session:
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)  # two servers never raise one event twice
            tickets = list(session.exec(query))
            for ticket in tickets:
                for event in policy.check(ticket, now):
                    self.log(session, ticket, "sla", event.kind, event.due.isoformat(), event.target)
                    actions = policy.actions_for(event)
                    if actions is not None:
                        done = self.sla_actions(session, ticket, actions)
                        # The hooks (live channel, webhooks) see the ticket as the actions left it.
                        event = replace(
                            event, priority=ticket.priority, queue=ticket.queue, assignee=ticket.assignee,
                            actions=tuple(done),
                        )  # fmt: skip
                    events.append(event)
                session.add(ticket)
            session.commit()
        return SlaCheck(len(tickets), events)

    def sla_actions(self, session: Session, ticket: Ticket, actions: SlaActions) -> list[str]:
        """Apply an SLA escalation to ``ticket`` (each change audited, actor ``sla``); what changed."""
        done: list[str] = []
        if actions.priority is not None:
            if actions.priority == "raise":
                step = min(PRIORITIES.index(ticket.priority) + 1, len(PRIORITIES) - 1)
                wanted: str = PRIORITIES[step]
            else:
                wanted = higher_priority(ticket.priority, actions.priority)
            if self.change(session, ticket, "sla", "priority", wanted):
                done.append(f"priority={wanted}")
        if actions.queue is not None and self.change(session, ticket, "sla", "queue", actions.queue):
            done.append(f"queue={actions.queue}")
        if actions.unassign or actions.assignee is not None:
            if self.change(session, ticket, "sla", "assignee", actions.assignee):
                done.append(f"assignee={actions.assignee}" if actions.assignee else "unassigned")
        before = list(ticket.tags or [])
        self.add_tags(session, ticket, "sla", actions.tags)
        added = [t for t in ticket.tags or [] if t not in before]
        if added:
            done.append("tags+=" + ",".join(added))
        if actions.note:
            self.note(session, ticket, "sla", actions.note)
            done.append("note")
        return done

    def csat_by_agent(self, *, since: datetime | None = None) -> list[CsatAverage]:
        """CSAT per agent (the agent on the feedback row), best first."""
        return self._csat(col(Feedback.agent), since, join=False)

    def csat_by_queue(self, *, since: datetime | None = None) -> list[CsatAverage]:
        """CSAT per queue (the queue of the conversation answered), best first."""
        return self._csat(col(Conversation.queue), since, join=True)

    def _csat(self, key: Any, since: datetime | None, *, join: bool) -> list[CsatAverage]:
        satisfied = func.sum(case((col(Feedback.score) >= 4, 1), else_=0))
        query: Any = select(key, func.count(), func.avg(Feedback.score), satisfied).select_from(Feedback)
        if join:
            query = query.join(Conversation, col(Conversation.id) == col(Feedback.conversation_id))
        if since is not None:
            query = query.where(col(Feedback.at) >= since)
        query = query.group_by(key)
        with self.session() as session:
            rows = [
                CsatAverage(k, int(n), round(float(avg), 2), round(int(sat or 0) / int(n), 3))
                for k, n, avg, sat in session.exec(query)
            ]
        return sorted(rows, key=lambda r: (-r.average, -r.count, r.key or ""))

    def _update(self, number: int, actor: str, **fields: Any) -> Ticket:
        with self.session() as session:
            ticket = self.load(session, number, for_update=True)
            for what, value in fields.items():
                self.change(session, ticket, actor, what, value)
            session.commit()
            return ticket


def _merge_filter(
    where: TicketFilter | None,
    status: Sequence[str],
    assignee: str | None,
    queue: str | None,
    customer_id: int | None,
) -> TicketFilter:
    f = where or TicketFilter()
    return TicketFilter(
        status=tuple(status) or tuple(f.status),
        priority=tuple(f.priority),
        assignee=assignee if assignee is not None else f.assignee,
        queue=queue if queue is not None else f.queue,
        customer_id=customer_id if customer_id is not None else f.customer_id,
        tag=f.tag,
        text=f.text,
        sla_breached=f.sla_breached,
        visible_to=f.visible_to,
    )
