"""A closed conversation feeds tickets as a call does: the same conversation row, its messages kept."""

from __future__ import annotations

from chat_helpers import World, msg
from sqlmodel import Session, select

from callcenter.core.config import TicketsSettings
from callcenter.store.crm import Conversation, Ticket
from callcenter.tickets import TicketService


async def test_a_closed_chat_becomes_a_ticket_on_its_own_conversation(running: World) -> None:
    w = running
    service = TicketService(w.store.engine, TicketsSettings(from_calls="all"))
    w.engine.tickets = service.record_call
    w.add_agent("ann")
    conv = await w.engine.receive(msg("hi", "visitor-9"))
    assert conv is not None
    await w.channel.said("What can we do for you?")
    await w.engine.receive(msg("1", "visitor-9"))
    await w.channel.said("ann has joined")
    await w.engine.agent_reply(conv, "Your refund was sent yesterday.", agent="ann", sender="ann")
    await w.engine.close(conv, by="agent:ann", agent="ann")
    await w.engine.settle()
    with Session(w.store.engine) as session:
        rows = session.exec(select(Conversation)).all()
        assert len(rows) == 1  # the ticket path found the chat's row (call_id chat:ID), no second one
        row = rows[0]
        assert row.channel == "webchat" and row.agent == "ann" and row.disposition == "answered"
        assert row.customer_id is not None
        [ticket] = session.exec(select(Ticket)).all()
        assert row.ticket_id == ticket.id  # the chat's conversation is the ticket's, linked
    assert [c.id for c, _ in service.repo.get(ticket.id).conversations] == [conv]  # type: ignore[arg-type]
    stored = w.engine.store.messages(conv)
    texts = [m.text for m in stored]
    assert "Your refund was sent yesterday." in texts and texts[0] == "hi"
    assert len(texts) == len(set((m.speaker, m.text, m.at) for m in stored))  # none filed twice
