"""The screen-pop's customer panel: who is calling or chatting, their recent contacts, their open tickets.

- ``GET /api/calls/{call_id}/customer`` — for a call up now or on record.
- ``GET /api/chats/{conversation_id}/customer`` — for a chat (web chat or WeChat).

Both answer ``{"customer": {...} | null, "history": [...], "open_tickets": [...]}``: the customer
(name, VIP level, numbers, WeChat OpenID, external id), their last ``HISTORY`` other conversations
(newest first, with the customer's first line) and their new/open/pending tickets (latest change first).
An unknown caller gives ``customer: null`` and empty lists.

Who may read: supervisors and admins any contact; an agent a call ringing them, with them or that they
handled (403 otherwise, as ``GET /api/calls/{id}``) and a chat assigned to them (404 otherwise, as
``GET /api/chats/{id}``: an agent learns nothing about chats that are not theirs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from sqlmodel import Session, col, select

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.api.calls import LiveView, _agents_of, _ringing
from callcenter.auth.service import Principal
from callcenter.chat.engine import ConversationEngine
from callcenter.customers import CustomerRepo
from callcenter.store import Store, call_public
from callcenter.store.crm import Conversation, Customer, CustomerPhone, Message, Ticket

__all__ = ["HISTORY", "OPEN_STATUSES", "create_screen_pop_router", "screen_pop"]

HISTORY = 5  # conversations shown
OPEN_STATUSES = ("new", "open", "pending")
_OPEN_TICKETS = 20  # a customer with more open tickets than this has a bigger problem than a panel


def _caller_of(call: dict[str, Any]) -> str | None:
    """The caller's number: the live view's ``caller``, else the user part of the From header/URI."""
    caller = call.get("caller")
    if isinstance(caller, str) and caller:
        return caller
    raw = call.get("from")
    if not isinstance(raw, str) or not raw:
        return None
    if "<" in raw and ">" in raw:  # name-addr form (RFC 3261 §20.20): "Name" <sip:user@host>;tag=…
        raw = raw[raw.index("<") + 1 : raw.index(">")]
    return raw


def screen_pop(
    customers: CustomerRepo,
    *,
    customer_id: int | None = None,
    phone: str | None = None,
    openid: str | None = None,
    exclude: int | None = None,
) -> dict[str, Any]:
    """The panel's data (blocking: run it in a thread). ``customer_id`` wins over ``phone``/``openid``;
    ``exclude``: the conversation on screen, left out of the history."""
    with Session(customers.engine) as session:
        customer = session.get(Customer, customer_id) if customer_id is not None else None
        if customer is None and (phone or openid):
            customer = customers.find_in(session, phone=phone, openid=openid)
        if customer is None or customer.id is None:
            return {"customer": None, "history": [], "open_tickets": []}
        cid = customer.id
        phones = session.exec(
            select(CustomerPhone.number)
            .where(CustomerPhone.customer_id == cid)
            .order_by(col(CustomerPhone.id))
        ).all()
        query = select(Conversation).where(Conversation.customer_id == cid)
        if exclude is not None:
            query = query.where(Conversation.id != exclude)
        query = query.order_by(col(Conversation.started_at).desc(), col(Conversation.id).desc())
        history = [_contact(session, c) for c in session.exec(query.limit(HISTORY)).all()]
        tickets = session.exec(
            select(Ticket)
            .where(Ticket.customer_id == cid, col(Ticket.status).in_(OPEN_STATUSES))
            .order_by(col(Ticket.updated_at).desc(), col(Ticket.id).desc())
            .limit(_OPEN_TICKETS)
        ).all()
        return {
            "customer": {
                "id": cid,
                "name": customer.name,
                "vip_level": customer.vip_level,
                "phones": list(phones),
                "wechat_openid": customer.wechat_openid,
                "external_id": customer.external_id,
            },
            "history": history,
            "open_tickets": [
                {
                    "number": t.id,
                    "subject": t.subject,
                    "status": t.status,
                    "priority": t.priority,
                    "updated_at": t.updated_at.isoformat(),
                }
                for t in tickets
            ],
        }


def _contact(session: Session, conv: Conversation) -> dict[str, Any]:
    first = session.exec(
        select(Message.text)
        .where(Message.conversation_id == conv.id, Message.speaker == "caller")
        .order_by(col(Message.at), col(Message.id))
        .limit(1)
    ).first()
    return {
        "id": conv.id,
        "channel": conv.channel,
        "started_at": conv.started_at.isoformat(),
        "queue": conv.queue,
        "agent": conv.agent,
        "disposition": conv.disposition,
        "first_line": first,
    }


def create_screen_pop_router(
    access: Access,
    store: Store,
    customers: CustomerRepo,
    *,
    live: LiveView,
    ringing: Callable[[str], str | None] | None = None,
    chats: ConversationEngine | None = None,
) -> APIRouter:
    """``live``: a call's live view while it is up; ``ringing(agent)``: the call ringing that agent now;
    ``chats``: the conversation engine (without it, chats are 404)."""
    router = APIRouter(prefix="/api", tags=["screen-pop"])
    staff = Depends(access.require(*STAFF))

    @router.get("/calls/{call_id}/customer")
    async def for_call(call_id: str, principal: Principal = staff) -> dict[str, Any]:
        call = live(call_id)
        if call is None:
            record = await asyncio.to_thread(store.get_call, call_id)
            if record is None:
                raise HTTPException(404, f"no call {call_id!r}")
            call = call_public(record)
        if principal.role not in SUPERVISORS:
            agent = principal.agent
            ringing_me = agent is not None and ringing is not None and _ringing(ringing, agent) == call_id
            if agent is None or (agent not in _agents_of(call) and not ringing_me):
                raise HTTPException(403, "agents see their own calls only")

        def find() -> dict[str, Any]:
            # The post-call path links the call's conversation to its customer; before that, the number.
            with Session(customers.engine) as session:
                conv = session.exec(select(Conversation).where(Conversation.call_id == call_id)).first()
            linked = conv.customer_id if conv is not None else None
            exclude = conv.id if conv is not None else None
            return screen_pop(customers, customer_id=linked, phone=_caller_of(call), exclude=exclude)

        return {"call_id": call_id, **await asyncio.to_thread(find)}

    @router.get("/chats/{conversation_id}/customer")
    async def for_chat(conversation_id: int, principal: Principal = staff) -> dict[str, Any]:
        agent: str | None = None
        if principal.role not in SUPERVISORS:
            if principal.agent is None:
                raise HTTPException(403, "your user is not linked to an agent")
            agent = principal.agent
        gone = HTTPException(404, f"no chat {conversation_id}")
        if chats is None:
            raise gone
        chat = chats.live(conversation_id)
        if chat is not None:
            holder, customer_id = chat.agent, chat.customer_id
        else:
            conv = await asyncio.to_thread(chats.store.conversation, conversation_id)
            if conv is None:
                raise gone
            holder, customer_id = conv.agent, conv.customer_id
        if agent is not None and holder != agent:
            raise gone
        out = await asyncio.to_thread(screen_pop, customers, customer_id=customer_id, exclude=conversation_id)
        return {"conversation_id": conversation_id, **out}

    return router
