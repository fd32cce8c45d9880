"""``/api/conversations``: every conversation — calls, web chats, WeChat chats — in one model.

``GET /api/conversations`` lists them newest first with filters (channel, customer, ticket, queue,
agent, time range, text in the messages) and paging (``limit``, ``offset``, ``total``);
``GET /api/conversations/{id}`` gives one with its messages (the transcript or the chat). Supervisors and
admins see all; an agent sees the conversations they handled (``agent``) only — a transcript is the
customer's words. Blocking database work: the handlers are plain ``def`` (FastAPI's thread pool).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from callcenter.api.access import STAFF, Access
from callcenter.auth.service import Principal
from callcenter.store.crm import Conversation, Message
from callcenter.tickets.repo import conversation_public

__all__ = ["create_conversations_router"]

ChannelName = Literal["voice", "webchat", "wechat"]


def create_conversations_router(engine: Engine, access: Access) -> APIRouter:
    router = APIRouter(prefix="/api/conversations", tags=["conversations"])
    staff = Depends(access.require(*STAFF))

    def own(principal: Principal) -> str | None:
        """The agent whose conversations an agent user may see; None = everything (staff above)."""
        return (principal.agent or principal.username) if principal.role == "agent" else None

    @router.get("")
    def list_conversations(
        principal: Principal = staff,
        channel: ChannelName | None = None,
        customer_id: int | None = None,
        ticket_id: int | None = None,
        queue: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        q: Annotated[str | None, Query(max_length=200, description="text in the messages")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Conversations, newest first, with the total for paging (messages: ``GET .../{id}``)."""
        query = select(Conversation)
        mine = own(principal)
        if mine is not None:
            query = query.where(Conversation.agent == mine)
        if channel is not None:
            query = query.where(Conversation.channel == channel)
        if customer_id is not None:
            query = query.where(Conversation.customer_id == customer_id)
        if ticket_id is not None:
            query = query.where(Conversation.ticket_id == ticket_id)
        if queue is not None:
            query = query.where(Conversation.queue == queue)
        if agent is not None:
            query = query.where(Conversation.agent == agent)
        if since is not None:
            query = query.where(col(Conversation.started_at) >= since)
        if until is not None:
            query = query.where(col(Conversation.started_at) < until)
        if q:
            pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            hits = select(Message.conversation_id).where(col(Message.text).ilike(pattern, escape="\\"))
            query = query.where(col(Conversation.id).in_(hits))
        with Session(engine) as s:
            total = s.exec(select(func.count()).select_from(query.subquery())).one()
            rows = s.exec(
                query.order_by(col(Conversation.started_at).desc(), col(Conversation.id).desc())
                .limit(limit)
                .offset(offset)
            ).all()
            counts = dict(
                s.exec(
                    select(Message.conversation_id, func.count())
                    .where(col(Message.conversation_id).in_([r.id for r in rows]))
                    .group_by(col(Message.conversation_id))
                ).all()
            )
        items = []
        for row in rows:
            item = conversation_public(row, [])
            del item["messages"]
            n = counts.get(row.id, 0) if row.id is not None else 0
            item.update(customer_id=row.customer_id, ticket_id=row.ticket_id, messages=n)
            items.append(item)
        return {"items": items, "total": int(total), "limit": limit, "offset": offset}

    @router.get("/{conversation_id}")
    def get_conversation(conversation_id: int, principal: Principal = staff) -> dict[str, Any]:
        """One conversation with its messages, oldest first."""
        with Session(engine) as s:
            row = s.get(Conversation, conversation_id)
            if row is None:
                raise HTTPException(404, f"no conversation {conversation_id}")
            mine = own(principal)
            if mine is not None and row.agent != mine:
                raise HTTPException(403, "agents see the conversations they handled only")
            messages = s.exec(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(col(Message.at), col(Message.id))
            ).all()
        out = conversation_public(row, messages)
        out.update(customer_id=row.customer_id, ticket_id=row.ticket_id, summary=row.summary)
        return out

    return router
