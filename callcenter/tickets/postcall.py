"""The post-call policy for many finished calls in one transaction (``TicketService.record_calls_sync``).

Same outcome as filing the calls one by one, in order, with far fewer statements: new customers,
phones, conversations, messages, tickets and their audit rows go in as SQLAlchemy Core executemany
(``INSERT … RETURNING`` in parameter order for the ids; no ORM objects). Only the rarer paths — a
ticket that is *updated* (dedupe, or a ticket the flow already filed for the call) and a conversation
that already exists — use the ORM, with the same building blocks as a single call.

Calls that could affect each other — two calls of one caller (the second must find the first's ticket)
or the hook run twice for one Call-ID — never share a round: a call goes into the round after the last
one holding its number or Call-ID, and each round sees the rows the earlier rounds wrote (same
transaction). Under load nearly every batch is one round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlmodel import Session, col
from sqlmodel import select as orm_select

from callcenter.core.logging import log_event
from callcenter.store.crm import Conversation, Customer, CustomerPhone, Feedback, Message, Ticket, TicketEvent
from callcenter.tickets.repo import MessageIn, higher_priority
from callcenter.tickets.states import OPEN_STATUSES
from callcenter.tickets.summary import Summary

if TYPE_CHECKING:
    from callcenter.tickets.service import TicketService, _Filed

__all__ = ["PostCall", "file_batch", "rounds"]

log = logging.getLogger(__name__)

_CHUNK = 500  # values per IN (...), well under SQLite's variable limit


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


_CUSTOMER, _PHONE, _CONV = _table(Customer), _table(CustomerPhone), _table(Conversation)
_MESSAGE, _TICKET, _EVENT, _FEEDBACK = _table(Message), _table(Ticket), _table(TicketEvent), _table(Feedback)


@dataclass
class PostCall:
    """One call on its way through a batch."""

    filed: _Filed
    force: bool  # file a ticket even when there is none to update
    who: str | None  # the caller's display name (a new customer's name)
    number: str | None  # the caller's normalised number (None: withheld, not a number)
    summary: Summary
    customer_id: int | None = None
    customer_name: str = ""
    vip_level: int = 0
    new_customer: bool = False
    conv: Conversation | None = None  # the conversation stored for this Call-ID before, if any
    conv_id: int | None = None
    ticket_id: int | None = None  # the result


@dataclass
class _NewTicket:
    """A ticket row before its INSERT (what :class:`~callcenter.tickets.sla.SlaClocks` needs, and
    the rest of the columns)."""

    subject: str
    priority: str
    queue: str | None
    tags: list[str]
    category: str | None
    customer_id: int | None
    summary: str
    entities: dict[str, Any]
    created_at: datetime
    status: str = "new"
    first_response_due: datetime | None = None
    first_response_at: datetime | None = None
    resolution_due: datetime | None = None
    sla_paused_at: datetime | None = None
    sla_paused_s: float = 0.0
    sla_fired: list[str] = field(default_factory=list)
    sla_next_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        return {
            "subject": self.subject, "body": "", "status": self.status, "priority": self.priority,
            "queue": self.queue, "assignee": None, "tags": self.tags, "category": self.category,
            "customer_id": self.customer_id, "summary": self.summary, "entities": self.entities,
            "created_at": self.created_at, "updated_at": self.created_at, "solved_at": None,
            "first_response_due": self.first_response_due, "first_response_at": self.first_response_at,
            "resolution_due": self.resolution_due, "sla_paused_at": self.sla_paused_at,
            "sla_paused_s": self.sla_paused_s, "sla_fired": self.sla_fired, "sla_next_at": self.sla_next_at,
        }  # fmt: skip


def rounds(items: Sequence[PostCall]) -> list[list[PostCall]]:
    """Items split so that no round holds two calls with one number or one Call-ID; the order of the
    calls of one caller (or one Call-ID) is kept."""
    out: list[list[PostCall]] = []
    last: dict[tuple[str, str], int] = {}
    for item in items:
        keys = [("call", item.filed.call_id or "")] if item.filed.call_id else []
        if item.number:
            keys.append(("phone", item.number))
        at = max((last[k] + 1 for k in keys if k in last), default=0)
        if at == len(out):
            out.append([])
        out[at].append(item)
        for k in keys:
            last[k] = at
    return out


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def file_batch(svc: TicketService, session: Session, items: Sequence[PostCall]) -> None:
    """File one round (see :func:`rounds`) in ``session``'s transaction; sets each ``ticket_id``."""
    now = svc.now()
    conn = session.connection()
    _customers(svc, conn, items, now)
    _existing_conversations(session, items)
    targets = _targets(svc, session, items, now)
    new: list[tuple[PostCall, _NewTicket]] = []
    updates: list[tuple[PostCall, Ticket]] = []
    for item in items:
        priority = item.filed.priority
        if item.vip_level > 0:
            priority = higher_priority(priority, svc.settings.vip_priority)
        target = targets.get(id(item))
        if target is not None:
            updates.append((item, target))
        elif item.force:
            new.append((item, _new_ticket(svc, item, priority, now)))
    if new:
        stmt = insert(_TICKET).returning(_TICKET.c.id, sort_by_parameter_order=True)
        ids = conn.execute(stmt, [t.values() for _, t in new]).scalars().all()
        for (item, row), number in zip(new, ids, strict=True):
            item.ticket_id = number
            log_event(
                log, "tickets.created", ticket=number, call_id=item.filed.call_id, customer=row.customer_id
            )
    for item, ticket in updates:
        item.ticket_id = ticket.id
    for item, _ in new:
        if item.conv is not None:  # e.g. a chat stored its conversation before closing: link it
            item.conv.ticket_id = item.ticket_id
    _conversations(session, items, now)
    _messages_and_feedback(conn, items, now)
    events: list[dict[str, Any]] = []
    for item, _ in new:
        actor, tid = item.filed.actor, item.ticket_id
        events.append(_event(tid, now, actor, "created", None, "new"))
        events.append(_event(tid, now, actor, "conversation", None, str(item.conv_id)))
        if item.filed.recording:
            events.append(_event(tid, now, actor, "recording", None, item.filed.recording))
    if events:
        conn.execute(insert(_EVENT), events)
    for item, ticket in updates:
        _update(svc, session, item, ticket)


def _event(
    ticket: int | None, at: datetime, actor: str, what: str, old: str | None, new: str | None
) -> dict[str, Any]:
    return {"ticket_id": ticket, "at": at, "actor": actor, "field": what, "old": old, "new": new}


def _customers(svc: TicketService, conn: Any, items: Sequence[PostCall], now: datetime) -> None:
    numbers = sorted({i.number for i in items if i.number})
    found: dict[str, tuple[int, str, int]] = {}
    for chunk in _chunks(numbers):
        query = (
            select(_PHONE.c.number, _CUSTOMER.c.id, _CUSTOMER.c.name, _CUSTOMER.c.vip_level)
            .join_from(_PHONE, _CUSTOMER, _PHONE.c.customer_id == _CUSTOMER.c.id)
            .where(_PHONE.c.number.in_(chunk))
        )
        for number, cid, name, vip in conn.execute(query):
            found[number] = (cid, name or "", vip or 0)
    missing = [n for n in numbers if n not in found]
    created: set[str] = set()
    if missing:
        names = {}
        for item in items:
            if item.number in missing and item.number not in names:
                names[item.number] = (item.who or "").strip()[:200]
        rows = [
            {"name": names[n], "email": None, "wechat_openid": None, "vip_level": 0, "external_id": None,
             "created_at": now, "updated_at": now}
            for n in missing
        ]  # fmt: skip
        stmt = insert(_CUSTOMER).returning(_CUSTOMER.c.id, sort_by_parameter_order=True)
        ids = conn.execute(stmt, rows).scalars().all()
        # A number another writer added meanwhile fails the unique index: the batch is retried.
        phones = [{"customer_id": i, "number": n} for n, i in zip(missing, ids, strict=True)]
        conn.execute(insert(_PHONE), phones)
        for n, i in zip(missing, ids, strict=True):
            found[n] = (i, names[n], 0)
            created.add(n)
    for item in items:
        if item.number:
            item.customer_id, item.customer_name, item.vip_level = found[item.number]
            item.new_customer = item.number in created


def _existing_conversations(session: Session, items: Sequence[PostCall]) -> None:
    call_ids = sorted({i.filed.call_id for i in items if i.filed.call_id})
    convs: dict[str, Conversation] = {}
    for chunk in _chunks(call_ids):
        for conv in session.exec(orm_select(Conversation).where(col(Conversation.call_id).in_(chunk))):
            assert conv.call_id is not None
            convs[conv.call_id] = conv
    for item in items:
        if item.filed.call_id:
            item.conv = convs.get(item.filed.call_id)


def _targets(
    svc: TicketService, session: Session, items: Sequence[PostCall], now: datetime
) -> dict[int, Ticket]:
    """The existing ticket each call updates: the one its conversation is linked to, else (dedupe) the
    customer's most recently changed open ticket within ``dedupe_days``. Keyed by ``id(item)``."""
    wanted: dict[int, int] = {}
    dedupe = [
        i for i in items
        if (i.conv is None or i.conv.ticket_id is None) and i.customer_id is not None and not i.new_customer
    ]  # fmt: skip
    for item in items:
        if item.conv is not None and item.conv.ticket_id is not None:
            wanted[id(item)] = item.conv.ticket_id
    if dedupe and svc.settings.dedupe_days > 0:
        since = now - timedelta(days=svc.settings.dedupe_days)
        customers = sorted({i.customer_id for i in dedupe if i.customer_id is not None})
        newest: dict[int, int] = {}
        for chunk in _chunks(customers):
            query = (
                select(_TICKET.c.id, _TICKET.c.customer_id)
                .where(
                    _TICKET.c.customer_id.in_(chunk),
                    _TICKET.c.status.in_(sorted(OPEN_STATUSES)),
                    _TICKET.c.updated_at >= since,
                )
                .order_by(_TICKET.c.customer_id, _TICKET.c.updated_at.desc(), _TICKET.c.id.desc())
            )
            for tid, cid in session.connection().execute(query):
                newest.setdefault(cid, tid)
        for item in dedupe:
            assert item.customer_id is not None
            if item.customer_id in newest:
                wanted[id(item)] = newest[item.customer_id]
    if not wanted:
        return {}
    found = orm_select(Ticket).where(col(Ticket.id).in_(sorted(set(wanted.values()))))
    if session.get_bind().dialect.name == "postgresql":
        found = found.with_for_update()  # an agent changing the same ticket now: one waits
    tickets = {t.id: t for t in session.exec(found)}
    return {key: tickets[tid] for key, tid in wanted.items() if tid in tickets}


def _new_ticket(svc: TicketService, item: PostCall, priority: str, now: datetime) -> _NewTicket:
    filed = item.filed
    conv = item.conv
    queue = filed.conversation.get("queue") or (conv.queue if conv is not None else None)
    subject = filed.subject or svc._subject(item.summary, filed, item.customer_name)
    ticket = _NewTicket(
        subject=subject.strip()[:200],
        priority=priority,
        queue=queue,
        tags=list(dict.fromkeys(filed.tags)),
        category=svc._category(filed.intent),
        customer_id=item.customer_id,
        summary=item.summary.text,
        entities=item.summary.entities,
        created_at=now,
    )
    if svc.sla is not None:
        svc.sla.start(ticket, now)
    if filed.answered_at is not None:
        if svc.sla is not None:
            svc.sla.responded(ticket, filed.answered_at, now)
        else:
            ticket.first_response_at = filed.answered_at
    return ticket


def _conversations(session: Session, items: Sequence[PostCall], now: datetime) -> None:
    fresh: list[PostCall] = []
    rows: list[dict[str, Any]] = []
    for item in items:
        filed, conv = item.filed, item.conv
        if conv is None:
            values: dict[str, Any] = {
                "channel": "voice", "customer_id": item.customer_id, "ticket_id": item.ticket_id,
                "call_id": filed.call_id, "address": filed.caller or None,
                "started_at": filed.started_at or now, "ended_at": None, "queue": None, "agent": None,
                "intent": None, "language": None, "disposition": None, "recording": filed.recording,
                "summary": item.summary.text,
            }  # fmt: skip
            values.update(filed.conversation)
            fresh.append(item)
            rows.append(values)
            continue
        for key, value in filed.conversation.items():
            setattr(conv, key, value)
        if filed.started_at is not None:
            conv.started_at = filed.started_at
        if item.customer_id is not None and conv.customer_id is None:
            conv.customer_id = item.customer_id
        if filed.recording and not conv.recording:
            conv.recording = filed.recording
        conv.summary = item.summary.text
        # ticket_id: set above for a new ticket, by _update for an existing one (its audit row
        # compares the old link).
        session.add(conv)
        item.conv_id = conv.id
    if rows:
        stmt = insert(_CONV).returning(_CONV.c.id, sort_by_parameter_order=True)
        ids = session.connection().execute(stmt, rows).scalars().all()
        for item, conv_id in zip(fresh, ids, strict=True):
            item.conv_id = conv_id
    if any(i.conv is not None for i in items):
        session.flush()


def _messages_and_feedback(conn: Any, items: Sequence[PostCall], now: datetime) -> None:
    old = sorted(i.conv_id for i in items if i.conv is not None and i.conv_id is not None)
    stored: dict[int, list[_Stored]] = {}
    for chunk in _chunks(old):
        query = (
            select(_MESSAGE.c.id, _MESSAGE.c.conversation_id, _MESSAGE.c.speaker, _MESSAGE.c.text,
                   _MESSAGE.c.at, _MESSAGE.c.confidence)
            .where(_MESSAGE.c.conversation_id.in_(chunk))
            .order_by(_MESSAGE.c.id)
        )  # fmt: skip
        for mid, cid, speaker, text, at, confidence in conn.execute(query):
            stored.setdefault(cid, []).append(_Stored(mid, speaker, text, at, confidence))
    rows: list[dict[str, Any]] = []
    gone: list[int] = []
    changed: list[dict[str, Any]] = []
    for item in items:
        if item.conv is None:
            rows.extend(_message_row(item.conv_id, m) for m in item.filed.messages)
        else:
            _merge(item, stored.get(item.conv_id or 0, []), rows, gone, changed)
    for chunk in _chunks(gone):
        conn.execute(delete(_MESSAGE).where(_MESSAGE.c.id.in_(chunk)))
    if changed:
        stmt = (
            update(_MESSAGE)
            .where(_MESSAGE.c.id == bindparam("mid"))
            .values(at=bindparam("new_at"), confidence=bindparam("new_confidence"))
        )
        conn.execute(stmt, changed)
    if rows:
        conn.execute(insert(_MESSAGE), rows)
    rated = [i for i in items if i.filed.csat is not None]
    if not rated:
        return
    # One feedback row per conversation: the hook run twice for a call replaces it.
    replaced = sorted(i.conv_id for i in rated if i.conv is not None and i.conv_id is not None)
    for chunk in _chunks(replaced):
        conn.execute(delete(_FEEDBACK).where(_FEEDBACK.c.conversation_id.in_(chunk)))
    feedback = []
    for item in rated:
        answer = item.filed.csat
        assert answer is not None
        feedback.append(
            {"conversation_id": item.conv_id, "agent": item.filed.conversation.get("agent"),
             "score": answer.five_point, "at": now,
             "comment": f"answered {answer.score} of {answer.scale}" if answer.scale != 5 else None}
        )  # fmt: skip
    conn.execute(insert(_FEEDBACK), feedback)


@dataclass
class _Stored:
    """A message row already stored for an existing conversation."""

    id: int
    speaker: str
    text: str
    at: datetime
    confidence: float | None


def _message_row(conv_id: int | None, m: MessageIn) -> dict[str, Any]:
    return {"conversation_id": conv_id, "speaker": m.speaker, "text": m.text, "at": m.at,
            "confidence": m.confidence}  # fmt: skip


def _merge(
    item: PostCall,
    stored: list[_Stored],
    rows: list[dict[str, Any]],
    gone: list[int],
    changed: list[dict[str, Any]],
) -> None:
    """The call's transcript onto a conversation that has messages already: a line stored before
    (same speaker and text, matched in order) keeps its row — a chat's own messages keep their ids
    and times; a line not there yet is added; a stored line the transcript no longer has is dropped
    (the IVR's partial transcript, or the hook run twice for one call, is replaced, not appended).
    A kept row takes the transcript's time when they differ (the IVR stored provisional times)."""
    waiting: dict[tuple[str, str], list[_Stored]] = {}
    for row in stored:
        waiting.setdefault((row.speaker, row.text), []).append(row)
    for m in item.filed.messages:
        same = waiting.get((m.speaker, m.text))
        if not same:
            rows.append(_message_row(item.conv_id, m))
            continue
        row = same.pop(0)
        if row.at != m.at or (m.confidence is not None and row.confidence != m.confidence):
            confidence = m.confidence if m.confidence is not None else row.confidence
            changed.append({"mid": row.id, "new_at": m.at, "new_confidence": confidence})
    gone.extend(row.id for left in waiting.values() for row in left)


def _update(svc: TicketService, session: Session, item: PostCall, ticket: Ticket) -> None:
    """The ORM path for a ticket that exists: the same changes (and audit rows) as a single call."""
    filed, repo = item.filed, svc.repo
    conv = item.conv
    old_link = conv.ticket_id if conv is not None else None
    same_call = old_link == ticket.id
    priority = filed.priority
    if item.vip_level > 0:
        priority = higher_priority(priority, svc.settings.vip_priority)
    queue = filed.conversation.get("queue") or (conv.queue if conv is not None else None)
    svc._update_from(
        session, ticket, filed, same_call=same_call, queue=queue, summary=item.summary, priority=priority,
        category=svc._category(filed.intent), conv_id=item.conv_id,
        conv_started=filed.started_at or (conv.started_at if conv is not None else svc.now()),
    )  # fmt: skip
    if not same_call:
        if conv is not None:  # a new conversation was inserted linked already
            conv.ticket_id = ticket.id
            session.add(conv)
        repo.log(session, ticket, filed.actor, "conversation", None, str(item.conv_id))
    if filed.recording:
        repo.note(session, ticket, filed.actor, filed.recording, what="recording")
    if filed.answered_at is not None:
        repo.responded(session, ticket, filed.answered_at)
