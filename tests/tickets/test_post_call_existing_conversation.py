"""The post-call path onto a conversation stored before it ran (a chat stores its own conversation and
messages, then files the closed conversation as a finished call): the ticket is linked to that row,
and the messages already there are kept, not deleted and re-inserted."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from ticket_clock import WallClock

from callcenter.core.config import TicketsSettings
from callcenter.store.crm import Conversation, Message, TicketEvent
from callcenter.tickets import HandledCall, TicketService, Turn

Line = tuple[str, str, float]


def _stored_chat(engine: Engine, clock: WallClock, lines: list[Line]) -> tuple[int, list[int]]:
    started = clock.now - timedelta(minutes=5)
    with Session(engine) as session:
        conv = Conversation(channel="webchat", call_id="chat:1", address="site/visitor-9", started_at=started)
        session.add(conv)
        session.flush()
        assert conv.id is not None
        rows = [
            Message(conversation_id=conv.id, speaker=s, text=t, at=started + timedelta(seconds=o))
            for s, t, o in lines
        ]
        session.add_all(rows)
        session.commit()
        return conv.id, [r.id for r in rows if r.id is not None]


def _closed_chat(clock: WallClock, lines: list[Line], **more: object) -> HandledCall:
    values: dict[str, object] = dict(
        call_id="chat:1",
        caller="",
        caller_name="Ada",
        started_at=clock.now - timedelta(minutes=5),
        ended_at=clock.now,
        disposition="answered",
        flow="webchat_en",
        queue="support",
        agent="ann",
        channel="webchat",
        transcript=tuple(Turn(s, t, o) for s, t, o in lines),
    )
    values.update(more)
    return HandledCall(**values)  # type: ignore[arg-type]


LINES: list[Line] = [
    ("caller", "Where is my refund for order 55123?", 1.0),
    ("bot", "Let me find an agent for you.", 2.5),
    ("agent", "Your refund was sent yesterday.", 40.25),
    ("caller", "Thanks!", 61.0),
]


def _messages(engine: Engine, conv_id: int) -> list[tuple[int | None, str, str]]:
    with Session(engine) as session:
        query = select(Message).where(col(Message.conversation_id) == conv_id).order_by(col(Message.at))
        return [(m.id, m.speaker, m.text) for m in session.execute(query).scalars()]


def test_a_stored_chat_is_linked_to_the_ticket_filed_for_it(engine: Engine, clock: WallClock) -> None:
    conv_id, ids = _stored_chat(engine, clock, LINES)
    svc = TicketService(engine, TicketsSettings(from_calls="all"), now=clock, linger_s=0.0)
    number = svc.record_call_sync(_closed_chat(clock, LINES))
    assert number is not None
    with Session(engine) as session:
        [conv] = session.execute(select(Conversation)).scalars().all()
        assert conv.id == conv_id and conv.ticket_id == number
        events = session.execute(select(TicketEvent).where(col(TicketEvent.ticket_id) == number)).scalars()
        assert [(e.field, e.new) for e in events] == [("created", "new"), ("conversation", str(conv_id))]
    detail = svc.repo.get(number)
    [(linked, messages)] = detail.conversations
    assert linked.id == conv_id
    assert [m.id for m in messages] == ids  # the chat's own rows, neither duplicated nor re-inserted
    assert detail.ticket.summary  # summarised from the chat's lines


def test_lines_the_stored_chat_lacks_are_added_once(engine: Engine, clock: WallClock) -> None:
    conv_id, ids = _stored_chat(engine, clock, LINES[:2])
    svc = TicketService(engine, TicketsSettings(from_calls="all"), now=clock, linger_s=0.0)
    first = svc.record_call_sync(_closed_chat(clock, LINES))
    again = svc.record_call_sync(_closed_chat(clock, LINES))  # the hook run twice
    assert first == again and first is not None
    stored = _messages(engine, conv_id)
    assert [(s, t) for _, s, t in stored] == [(s, t) for s, t, _ in LINES]
    assert [i for i, _, _ in stored][:2] == ids


def test_a_batch_links_every_stored_conversation_it_files(engine: Engine, clock: WallClock) -> None:
    conv_id, _ = _stored_chat(engine, clock, LINES)
    svc = TicketService(engine, TicketsSettings(from_calls="all"), now=clock, linger_s=0.0)
    voice = HandledCall(
        call_id="v1", caller="+4930111", started_at=clock.now - timedelta(minutes=1), ended_at=clock.now,
        disposition="abandoned", flow="hotline_en", transcript=(Turn("caller", "Order 77777 please.", 1.0),),
    )  # fmt: skip
    chat_ticket, voice_ticket = svc.record_calls_sync([_closed_chat(clock, LINES), voice])
    assert chat_ticket is not None and voice_ticket is not None and chat_ticket != voice_ticket
    with Session(engine) as session:
        rows = session.execute(select(col(Conversation.call_id), col(Conversation.ticket_id)))
        links = {call_id: ticket for call_id, ticket in rows}
    assert links == {"chat:1": chat_ticket, "v1": voice_ticket}
    assert len(_messages(engine, conv_id)) == len(LINES)
