"""The ticket service the IVR and the post-call hook use; SQL runs in worker threads.

* ``create`` / ``update`` implement :class:`callcenter.ivr.services.Tickets` (the flow's ``ticket`` and
  ``voicemail`` nodes).
* ``record_call`` is the post-call policy: the call's conversation (transcript as messages) is stored,
  and per ``tickets.from_calls`` a ticket is filed: intent → category, an extractive summary, the
  customer linked by caller ID (a customer is created for an unknown number, so the next call finds it).

Dedupe: a customer with an open ticket (new, open, pending) updated within ``tickets.dedupe_days`` gets
that ticket updated with the new conversation instead of a second ticket, from either path. A pending
ticket the customer calls about again goes back to open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from callcenter.core.config import TicketsSettings
from callcenter.core.logging import log_event
from callcenter.customers import CustomerRepo
from callcenter.ivr.services import TicketDraft, TicketUpdate, TranscriptEntry
from callcenter.store.crm import Conversation, Customer, Feedback, Ticket
from callcenter.store.db import utcnow
from callcenter.tickets.batch import BatchWriter
from callcenter.tickets.csat import CsatAnswer
from callcenter.tickets.postcall import PostCall, file_batch, rounds
from callcenter.tickets.repo import MessageIn, TicketNotFound, TicketRepo, higher_priority
from callcenter.tickets.sla import SlaPolicy
from callcenter.tickets.summary import Summary, summarize

__all__ = ["HandledCall", "TicketService", "Turn", "is_resolved", "wants_ticket"]

log = logging.getLogger(__name__)

_RESOLVED_OUTCOMES = frozenset({"completed", "hangup", "transferred"})  # the flow ended the call itself
_SUMMARY_MAX = 4000
_ATTEMPTS = 3  # a new caller's customer row can race another call from the same number


@dataclass(frozen=True)
class Turn:
    """One utterance: ``offset_s`` seconds after the call started."""

    speaker: str  # caller, agent, system or bot
    text: str
    offset_s: float = 0.0
    confidence: float | None = None


@dataclass(frozen=True)
class HandledCall:
    """What the post-call hook knows about a finished call."""

    call_id: str
    caller: str  # caller ID (the From user part), "" when withheld
    started_at: datetime
    ended_at: datetime
    disposition: str  # answered, abandoned, overflowed, voicemail, callback, failed, …
    caller_name: str | None = None
    flow: str | None = None
    ivr_outcome: str | None = None  # the FlowResult outcome
    queue: str | None = None
    agent: str | None = None
    intent: str | None = None
    language: str | None = None
    transcript: tuple[Turn, ...] = ()
    recording: str | None = None
    channel: str = "voice"
    csat: CsatAnswer | None = None  # the caller's survey answer (callcenter.tickets.csat.survey_answer)

    @classmethod
    def from_call_json(cls, record: Mapping[str, Any], **more: Any) -> HandledCall:
        """From a ``call_public`` dict (what ``calls list --json`` prints); ``more`` adds or overrides
        fields the record lacks (``caller``, ``intent``, ``language``)."""
        started = _parse_time(record.get("started_at")) or utcnow()
        turns = tuple(
            Turn(
                str(u.get("speaker", "caller")),
                str(u.get("text", "")),
                float(u.get("start") or 0.0),
                u.get("confidence"),
            )  # fmt: skip
            for u in record.get("transcript") or ()
            if isinstance(u, Mapping) and u.get("text")
        )
        fields: dict[str, Any] = {
            "call_id": str(record.get("sip_call_id", "")),
            "caller": "",
            "started_at": started,
            "ended_at": _parse_time(record.get("ended_at")) or started,
            "disposition": str(record.get("disposition") or ""),
            "flow": record.get("flow"),
            "ivr_outcome": record.get("ivr_outcome"),
            "queue": record.get("queue"),
            "agent": record.get("agent"),
            "transcript": turns,
            "recording": record.get("recording"),
        }
        fields.update(more)
        return cls(**fields)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None


def is_resolved(call: HandledCall) -> bool:
    """Answered by an agent, or the flow finished the call itself (self-service)."""
    if call.disposition == "answered":
        return True
    if call.disposition in ("voicemail", "callback", "abandoned", "overflowed"):
        return False
    return call.ivr_outcome in _RESOLVED_OUTCOMES


def wants_ticket(policy: str, call: HandledCall) -> bool:
    """Whether ``tickets.from_calls`` files a ticket for ``call`` (calls that never reached a flow or a
    queue — the demo tone, a refused call — get none)."""
    if policy == "none" or (call.flow is None and call.queue is None):
        return False
    return policy == "all" or not is_resolved(call)


@dataclass
class _Filed:
    """What one filing transaction needs, whichever path it came from."""

    caller: str
    call_id: str | None
    actor: str
    subject: str | None
    body: str = ""
    priority: str = "normal"
    tags: tuple[str, ...] = ()
    intent: str | None = None
    messages: list[MessageIn] = field(default_factory=list)
    conversation: dict[str, Any] = field(default_factory=dict)  # Conversation columns to set
    started_at: datetime | None = None
    recording: str | None = None
    replace_messages: bool = True
    csat: CsatAnswer | None = None
    answered_at: datetime | None = None  # an agent talked with the customer (first response)


class TicketService:
    """Implements the IVR ``Tickets`` protocol and the post-call ticket policy."""

    def __init__(
        self,
        engine: Engine,
        settings: TicketsSettings | None = None,
        *,
        customers: CustomerRepo | None = None,
        now: Callable[[], datetime] = utcnow,
        max_batch: int = 200,
        linger_s: float = 0.05,
    ) -> None:
        self.settings = settings or TicketsSettings()
        self.now = now
        sla = self.settings.sla
        self.sla = SlaPolicy.from_settings(sla) if sla.enabled else None
        self.repo = TicketRepo(engine, now=now, sla=self.sla)
        self.customers = customers or CustomerRepo(engine, country_code=self.settings.phone_country_code)
        # Post-call filing: one thread, many calls per transaction (started by the first call).
        self.writer: BatchWriter[HandledCall, int | None] = BatchWriter(
            self.record_calls_sync,
            self.record_call_sync,
            max_batch=max_batch,
            linger_s=linger_s,
            name="ticket-writer",
        )

    def close(self, timeout: float | None = None) -> None:
        """Write the finished calls still queued, then stop the writer thread (blocking: call it from a
        worker, e.g. ``await asyncio.to_thread(tickets.close)``). Later calls are filed one by one."""
        self.writer.stop(timeout)

    # -- the IVR's Tickets protocol ------------------------------------------------------------------------

    async def create(self, draft: TicketDraft) -> str:
        return str(await asyncio.to_thread(self.create_sync, draft))

    async def update(self, ticket_id: str, update: TicketUpdate) -> None:
        await asyncio.to_thread(self.update_sync, ticket_id, update)

    async def record_call(self, call: HandledCall) -> int | None:
        """The post-call hook: store the conversation, file or update a ticket per the policy; returns
        the ticket's number (None: no ticket) once it is committed. Never raises: a failure is logged.

        The call joins the writer's next batch; a cancelled caller does not take it out of the batch."""
        try:
            if self.writer.closed:
                return await asyncio.to_thread(self.record_call_sync, call)
            return await asyncio.shield(asyncio.wrap_future(self.writer.submit(call)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log_event(
                log, "tickets.record_call_failed", level=logging.ERROR, call_id=call.call_id, exc_info=True
            )
            return None

    # -- synchronous versions (worker threads, the CLI, tests) ----------------------------------------------

    def create_sync(self, draft: TicketDraft) -> int:
        now = self.now()
        intent = draft.variables.get("intent") if isinstance(draft.variables.get("intent"), str) else None
        filed = _Filed(
            caller=draft.caller,
            call_id=draft.call_id or None,
            actor="ivr",
            subject=draft.subject,
            body=draft.body,
            priority=draft.priority,
            tags=draft.tags,
            intent=intent,
            messages=_entries_as_messages(draft.transcript, now),
            conversation={"intent": intent} if intent else {},
            recording=draft.recording,
            # The call goes on: what was said so far; the post-call hook stores the whole transcript.
            replace_messages=True,
        )
        number = self._file(filed, force=True)
        assert number is not None
        return number

    def update_sync(self, ticket_id: str, update: TicketUpdate) -> None:
        number = _number(ticket_id)
        with self.repo.session() as session:
            ticket = self.repo.load(session, number, for_update=True)
            if update.body:
                self.repo.note(session, ticket, "ivr", update.body)
            if update.priority:
                self.repo.change(
                    session, ticket, "ivr", "priority", higher_priority(ticket.priority, update.priority)
                )
            self.repo.add_tags(session, ticket, "ivr", update.tags)
            if update.transcript:
                text = "\n".join(f"{_speaker(e.speaker)}: {e.text}" for e in update.transcript)
                self.repo.note(session, ticket, "ivr", text, what="transcript")
            if update.recording:
                self.repo.note(session, ticket, "ivr", update.recording, what="recording")
            if ticket.status == "pending":
                self.repo.change(session, ticket, "ivr", "status", "open")  # the customer came back
            session.commit()

    def record_call_sync(self, call: HandledCall) -> int | None:
        """One call in its own transaction (the same code as a batch of one)."""
        return self.record_calls_sync([call])[0]

    def record_calls_sync(self, calls: Sequence[HandledCall]) -> list[int | None]:
        """The post-call policy for ``calls`` in one transaction (see :mod:`callcenter.tickets.postcall`);
        each call's ticket number, or None. Same result as filing them one by one in this order."""
        items: list[PostCall | None] = [self._post_call(call) for call in calls]
        todo = [i for i in items if i is not None]
        if todo:
            for attempt in range(_ATTEMPTS):
                try:
                    with self.repo.session() as session:
                        for batch in rounds(todo):
                            file_batch(self, session, batch)
                        session.commit()
                    break
                except IntegrityError:  # a new caller's number added by another writer meanwhile
                    for item in todo:
                        item.ticket_id = item.conv_id = item.conv = None
                        item.customer_id, item.new_customer = None, False
                    if attempt == _ATTEMPTS - 1:
                        raise
        return [i.ticket_id if i is not None else None for i in items]

    def _post_call(self, call: HandledCall) -> PostCall | None:
        if call.flow is None and call.queue is None and not call.transcript:
            return None  # never reached a flow or a queue: nothing to keep
        started = call.started_at
        messages = [
            MessageIn(
                _speaker(t.speaker), t.text, started + timedelta(seconds=max(0.0, t.offset_s)), t.confidence
            )
            for t in sorted(call.transcript, key=lambda t: t.offset_s)
            if t.text.strip()
        ]
        conversation = {
            "channel": call.channel,
            "ended_at": call.ended_at,
            "queue": call.queue,
            "agent": call.agent,
            "intent": call.intent,
            "language": call.language,
            "disposition": call.disposition,
        }
        if call.recording:
            conversation["recording"] = call.recording
        filed = _Filed(
            caller=call.caller,
            call_id=call.call_id or None,
            actor="system",
            subject=None,
            intent=call.intent,
            messages=messages,
            conversation={k: v for k, v in conversation.items() if v is not None},
            started_at=started,
            csat=call.csat,
            answered_at=call.ended_at if call.disposition == "answered" and call.agent else None,
        )
        filed.tags = (call.disposition,) if call.disposition in ("abandoned", "voicemail", "callback") else ()
        summary = summarize(
            ((m.speaker, m.text) for m in messages), max_sentences=self.settings.summary_sentences
        )
        number = self.customers.normalize(call.caller) if call.caller else None
        force = wants_ticket(self.settings.from_calls, call)
        return PostCall(filed, force, call.caller_name, number, summary)

    # -- the one transaction -------------------------------------------------------------------------------

    def _file(self, filed: _Filed, *, force: bool, who: str | None = None) -> int | None:
        for attempt in range(_ATTEMPTS):
            try:
                with self.repo.session() as session:
                    number = self._file_in(session, filed, force=force, who=who)
                    session.commit()
                    return number
            except IntegrityError:
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _file_in(self, session: Session, filed: _Filed, *, force: bool, who: str | None) -> int | None:
        now = self.now()
        customer, new_customer = self._customer(session, filed.caller, who)
        conv = self._conversation(session, filed, customer)
        assert conv.id is not None
        if filed.messages or filed.replace_messages:
            self.repo.replace_messages(session, conv.id, filed.messages)
        summary = summarize(
            ((m.speaker, m.text) for m in filed.messages), max_sentences=self.settings.summary_sentences
        )
        conv.summary = summary.text
        if filed.csat is not None:
            self._feedback(session, conv, filed.csat, now)
        ticket: Ticket | None = None
        if conv.ticket_id is not None:
            ticket = session.get(Ticket, conv.ticket_id)
        elif customer is not None and customer.id is not None and self.settings.dedupe_days > 0:
            # A customer created just now has no tickets: a first-time caller skips the query.
            since = now - timedelta(days=self.settings.dedupe_days)
            if not new_customer:
                with session.no_autoflush:  # the messages just added cannot change the answer
                    ticket = self.repo.find_open_for_customer(session, customer.id, since)
        if ticket is None and not force:
            return None
        priority = filed.priority
        if customer is not None and customer.vip_level > 0:
            priority = higher_priority(priority, self.settings.vip_priority)
        category = self._category(filed.intent)
        if ticket is None:
            ticket = Ticket(
                subject=filed.subject or self._subject(summary, filed, customer.name if customer else None),
                body=filed.body,
                priority=priority,
                queue=conv.queue,
                tags=list(dict.fromkeys(filed.tags)),
                category=category,
                customer_id=customer.id if customer is not None else None,
                summary=summary.text,
                entities=summary.entities,
            )
            self.repo.insert(session, ticket, filed.actor)
            log_event(
                log, "tickets.created", ticket=ticket.id, call_id=filed.call_id, customer=ticket.customer_id
            )
        else:
            self._update_from(
                session, ticket, filed, same_call=conv.ticket_id == ticket.id, queue=conv.queue,
                summary=summary, priority=priority, category=category, conv_id=conv.id,
                conv_started=conv.started_at,
            )  # fmt: skip
        assert ticket.id is not None
        if conv.ticket_id != ticket.id:
            conv.ticket_id = ticket.id
            session.add(conv)
            self.repo.log(session, ticket, filed.actor, "conversation", None, str(conv.id))
        if filed.recording:
            self.repo.note(session, ticket, filed.actor, filed.recording, what="recording")
        if filed.answered_at is not None:
            self.repo.responded(session, ticket, filed.answered_at)
        return ticket.id

    @staticmethod
    def _feedback(session: Session, conv: Conversation, answer: CsatAnswer, now: datetime) -> None:
        """One feedback row per conversation (the hook run twice for a call replaces it)."""
        assert conv.id is not None
        row = session.exec(select(Feedback).where(Feedback.conversation_id == conv.id)).first()
        if row is None:
            row = Feedback(conversation_id=conv.id, score=answer.five_point)
        row.score, row.agent, row.at = answer.five_point, conv.agent, now
        if answer.scale != 5:
            row.comment = f"answered {answer.score} of {answer.scale}"
        session.add(row)

    def _update_from(
        self,
        session: Session,
        ticket: Ticket,
        filed: _Filed,
        *,
        same_call: bool,
        queue: str | None,
        summary: Summary,
        priority: str,
        category: str | None,
        conv_id: int | None,
        conv_started: datetime,
    ) -> None:
        actor = filed.actor
        ticket.summary = self._ticket_summary(session, ticket, conv_id, conv_started, summary.text)
        if filed.body:
            self.repo.note(session, ticket, actor, filed.body)
        self.repo.change(session, ticket, actor, "priority", higher_priority(ticket.priority, priority))
        self.repo.add_tags(session, ticket, actor, filed.tags)
        if category and not ticket.category:
            self.repo.change(session, ticket, actor, "category", category)
        if queue and not ticket.queue:
            self.repo.change(session, ticket, actor, "queue", queue)
        merged = {k: list(v) for k, v in (ticket.entities or {}).items()}
        for kind, values in summary.entities.items():
            merged[kind] = list(dict.fromkeys([*merged.get(kind, []), *values]))
        ticket.entities = merged
        if not same_call and ticket.status == "pending":
            self.repo.change(session, ticket, actor, "status", "open")  # the customer came back
        ticket.updated_at = self.now()
        session.add(ticket)

    def _ticket_summary(
        self, session: Session, ticket: Ticket, conv_id: int | None, started: datetime, text: str
    ) -> str:
        """The summaries of the ticket's conversations (this one — ``conv_id`` — included), oldest
        first, each dated when there are several; the newest text is kept when it grows too long."""
        query = select(Conversation.id, Conversation.started_at, Conversation.summary).where(
            Conversation.ticket_id == ticket.id
        )
        convs = {cid: (at, cid or 0, summ) for cid, at, summ in session.exec(query)}
        convs[conv_id] = (started, conv_id or 0, text)
        parts = [c for c in sorted(convs.values()) if c[2]]
        if len(parts) == 1:
            return parts[0][2]
        joined = "\n\n".join(f"[{at:%Y-%m-%d %H:%M}] {summ}" for at, _, summ in parts)
        return joined[-_SUMMARY_MAX:]

    def _customer(self, session: Session, caller: str, name: str | None) -> tuple[Customer | None, bool]:
        """The caller's customer, and whether it was created now."""
        number = self.customers.normalize(caller) if caller else None
        if number is None:
            return None, False
        found = self.customers.find_in(session, phone=number)
        if found is not None:
            return found, False
        return self.customers.create_in(session, [number], name=(name or "").strip()[:200]), True

    def _conversation(self, session: Session, filed: _Filed, customer: Customer | None) -> Conversation:
        conv = None
        if filed.call_id:
            conv = session.exec(select(Conversation).where(Conversation.call_id == filed.call_id)).first()
        if conv is None:
            conv = Conversation(
                call_id=filed.call_id,
                address=filed.caller or None,
                started_at=filed.started_at or self.now(),
            )
        for key, value in filed.conversation.items():
            setattr(conv, key, value)
        if filed.started_at is not None:
            conv.started_at = filed.started_at
        if customer is not None and conv.customer_id is None:
            conv.customer_id = customer.id
        if filed.recording and not conv.recording:
            conv.recording = filed.recording
        session.add(conv)
        session.flush()
        return conv

    def _category(self, intent: str | None) -> str | None:
        if not intent:
            return None
        return self.settings.categories.get(intent, intent)

    @staticmethod
    def _subject(summary: Summary, filed: _Filed, name: str | None) -> str:
        if summary.sentences:
            first = summary.sentences[0]
            return first if len(first) <= 80 else first[:77].rstrip() + "…"
        who = name or filed.caller or "unknown caller"
        kind = filed.conversation.get("disposition") or "call"
        return f"{str(kind).capitalize()} call from {who}" if kind != "call" else f"Call from {who}"


def _number(ticket_id: str) -> int:
    text = ticket_id.strip().lstrip("#")
    if not text.isdigit():
        raise TicketNotFound(f"no ticket {ticket_id!r} (ticket numbers are digits)")
    return int(text)


def _speaker(speaker: str) -> str:
    return {"ivr": "system", "customer": "caller"}.get(speaker, speaker)


def _entries_as_messages(entries: Iterable[TranscriptEntry], now: datetime) -> list[MessageIn]:
    # The IVR's transcript has no times: keep its order one microsecond apart, ending now.
    listed: Sequence[TranscriptEntry] = list(entries)
    n = len(listed)
    return [
        MessageIn(_speaker(e.speaker), e.text, now - timedelta(microseconds=n - i))
        for i, e in enumerate(listed)
        if e.text.strip()
    ]
