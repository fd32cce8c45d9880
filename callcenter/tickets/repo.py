"""Tickets in SQL: every change in one transaction with its audit row (``ticket_event``).

Synchronous: the CLI calls it directly, the server from worker threads (:mod:`callcenter.tickets.service`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from callcenter.core.errors import CallcenterError
from callcenter.store.crm import PRIORITIES, Conversation, Customer, Message, Ticket, TicketEvent
from callcenter.store.db import utcnow
from callcenter.tickets.states import OPEN_STATUSES, STATUSES, check_transition

__all__ = [
    "MessageIn",
    "TicketDetail",
    "TicketError",
    "TicketNotFound",
    "TicketRepo",
    "conversation_public",
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
    def __init__(self, engine: Engine, *, now: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.now = now  # wall clock (aware UTC); tests pass a fake one

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
        self.log(session, ticket, actor, what, old, new)
        return True

    def add_tags(self, session: Session, ticket: Ticket, actor: str, tags: Iterable[str]) -> None:
        current = list(ticket.tags or [])
        merged = current + [t for t in dict.fromkeys(tags) if t and t not in current]
        if merged != current:
            self.change(session, ticket, actor, "tags", merged)

    def note(self, session: Session, ticket: Ticket, actor: str, text: str, what: str = "note") -> None:
        ticket.updated_at = self.now()
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
        session.add_all(
            Message(conversation_id=conversation_id, speaker=m.speaker, text=m.text, at=m.at,
                    confidence=m.confidence)
            for m in messages
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
    ) -> list[Ticket]:
        """Newest changes first."""
        unknown = [s for s in status if s not in STATUSES]
        if unknown:
            raise TicketError(f"status {unknown[0]!r}: expected one of {', '.join(STATUSES)}")
        query = select(Ticket)
        if status:
            query = query.where(col(Ticket.status).in_(list(status)))
        if assignee is not None:
            query = query.where(Ticket.assignee == assignee)
        if queue is not None:
            query = query.where(Ticket.queue == queue)
        if customer_id is not None:
            query = query.where(Ticket.customer_id == customer_id)
        query = (
            query.order_by(col(Ticket.updated_at).desc(), col(Ticket.id).desc()).offset(offset).limit(limit)
        )
        with self.session() as session:
            return list(session.exec(query))

    def count(self, *, status: Sequence[str] = ()) -> int:
        query = select(func.count()).select_from(Ticket)
        if status:
            query = query.where(col(Ticket.status).in_(list(status)))
        with self.session() as session:
            return int(session.exec(query).one())

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

    def _update(self, number: int, actor: str, **fields: Any) -> Ticket:
        with self.session() as session:
            ticket = self.load(session, number, for_update=True)
            for what, value in fields.items():
                self.change(session, ticket, actor, what, value)
            session.commit()
            return ticket
