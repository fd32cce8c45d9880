"""The agent inbox: text conversations (web chat, WeChat) over REST, and the ``/agent/chats`` page.

An agent sees and acts on their own chats only (the agent linked to their user); supervisors and
admins see every chat and may reply, close or transfer any. Unknown or someone else's chat → 404 (an
agent learns nothing about chats that are not theirs).

- ``GET /api/chats?state=open|waiting|closed`` — open: in an agent's inbox; waiting: in a queue (an
  agent sees none: chats are assigned, not picked); closed: the latest closed.
- ``GET /api/chats/{id}`` — the conversation and its messages, oldest first.
- ``POST /api/chats/{id}/messages {text}`` — a reply to the customer (through the channel).
- ``POST /api/chats/{id}/close``; ``POST /api/chats/{id}/handback`` (to the head of its queue, for
  another agent); ``POST /api/chats/{id}/transfer {queue | agent}``.
- ``POST /api/chats/away`` — the agent closes the inbox: their chats go back to the queues.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, model_validator

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.api.pages import WEB_DIR
from callcenter.auth.service import Principal
from callcenter.calls.assist import Suggester, Suggestion
from callcenter.chat.engine import ChatError, ConversationEngine

__all__ = ["create_chat_router"]

log = logging.getLogger("callcenter.api.chat")

_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


class ReplyBody(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class TransferBody(BaseModel):
    queue: str | None = Field(None, max_length=64)
    agent: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _one(self) -> TransferBody:
        if (self.queue is None) == (self.agent is None):
            raise ValueError("give either queue or agent")
        return self


def _conv_json(conv: Any) -> dict[str, Any]:
    return {
        "id": conv.id,
        "channel": conv.channel,
        "address": conv.address,
        "customer_id": conv.customer_id,
        "state": "closed",
        "queue": conv.queue,
        "agent": conv.agent,
        "started_at": conv.started_at.isoformat(),
        "ended_at": conv.ended_at.isoformat() if conv.ended_at else None,
        "disposition": conv.disposition,
        "ticket_id": conv.ticket_id,
    }


def create_chat_router(
    engine: ConversationEngine, access: Access, *, suggester: Suggester | None = None
) -> APIRouter:
    """``suggester``: the knowledge base; an open chat's view then carries ``suggestions`` (agent assist:
    the top articles for the customer's latest messages, recomputed each time the inbox reads the chat —
    which it does on every ``chat_message`` event)."""
    router = APIRouter(tags=["chats"])
    staff = Depends(access.require(*STAFF))

    def mine(principal: Principal) -> str | None:
        """None: every chat (supervisors); else the agent whose chats these are."""
        if principal.role in SUPERVISORS:
            return None
        if principal.agent is None:
            raise HTTPException(403, "your user is not linked to an agent")
        return principal.agent

    def not_found(conversation_id: int) -> HTTPException:
        return HTTPException(404, f"no chat {conversation_id}")

    @router.get("/api/chats")
    async def list_chats(
        state: Literal["open", "waiting", "closed"] = Query("open"), principal: Principal = staff
    ) -> list[dict[str, Any]]:
        agent = mine(principal)
        if state == "closed":
            rows = await asyncio.to_thread(engine.store.closed, agent)
            return [_conv_json(c) for c in rows]
        want = "assigned" if state == "open" else "waiting"
        if state == "waiting" and agent is not None:
            return []
        found = [c.summary() for c in engine.conversations(agent) if c.state == want]
        remote = getattr(engine.remote, "summaries", None)
        if remote is not None:  # cluster mode: the chats other nodes hold, as they last wrote them
            here = {r["id"] for r in found}
            shown = "open" if state == "open" else "waiting"
            found += [
                r
                for r in await remote()
                if r.get("id") not in here
                and r.get("state") == shown
                and (agent is None or r.get("agent") == agent)
            ]
            for r in found:  # the place in the whole cluster's line (the holder wrote it when it changed)
                if r.get("state") == "waiting" and isinstance(r.get("id"), int):
                    r["position"] = engine.position(r["id"], r.get("queue")) or r.get("position")
            found.sort(key=lambda r: int(r.get("id") or 0))
        return found

    @router.get("/api/chats/{conversation_id}")
    async def get_chat(conversation_id: int, principal: Principal = staff) -> dict[str, Any]:
        agent = mine(principal)
        live = engine.live(conversation_id)
        held = await _held_elsewhere(conversation_id) if live is None else None
        if live is not None:
            if agent is not None and live.agent != agent:
                raise not_found(conversation_id)
            info = live.summary()
        elif held is not None:
            if agent is not None and held.get("agent") != agent:
                raise not_found(conversation_id)
            info = {k: v for k, v in held.items() if k not in ("language", "node")}
            if info.get("state") == "waiting":
                info["position"] = engine.position(conversation_id, info.get("queue")) or info.get("position")
        else:
            conv = await asyncio.to_thread(engine.store.conversation, conversation_id)
            if conv is None or (agent is not None and conv.agent != agent):
                raise not_found(conversation_id)
            info = _conv_json(conv)
        rows = await asyncio.to_thread(engine.store.messages, conversation_id)
        messages = [m.as_json() for m in rows]
        out = {**info, "messages": messages}
        if suggester is not None and info.get("state") == "open":
            said = [str(m.get("text", "")) for m in messages if m.get("speaker") == "caller"]
            said = said[-ASSIST_MESSAGES:]
            language = live.language if live is not None else (held or {}).get("language")
            out["suggestions"] = await _suggestions(suggester, " ".join(said), language)
        return out

    async def _held_elsewhere(conversation_id: int) -> dict[str, Any] | None:
        """Cluster mode: the summary of a chat another node holds."""
        summary = getattr(engine.remote, "summary", None)
        return await summary(conversation_id) if summary is not None else None

    def act_error(conversation_id: int, exc: ChatError) -> HTTPException:
        if exc.reason == "not_found":
            return not_found(conversation_id)
        if exc.reason == "unavailable":
            return HTTPException(503, str(exc), headers={"Retry-After": "2"})
        return HTTPException(422 if exc.reason == "invalid" else 409, str(exc))

    @router.post("/api/chats/{conversation_id}/messages", status_code=201)
    async def reply(conversation_id: int, body: ReplyBody, principal: Principal = staff) -> dict[str, Any]:
        agent = mine(principal)
        try:
            out = await engine.agent_reply(
                conversation_id, body.text, agent=agent, sender=principal.agent or principal.username
            )
        except ChatError as exc:
            raise act_error(conversation_id, exc) from None
        return {"conversation_id": out.conversation_id, "text": out.text, "sent_at": out.sent_at.isoformat()}

    @router.post("/api/chats/{conversation_id}/close")
    async def close(conversation_id: int, principal: Principal = staff) -> dict[str, Any]:
        agent = mine(principal)
        try:
            await engine.close(conversation_id, by=f"agent:{principal.username}", agent=agent)
        except ChatError as exc:
            raise act_error(conversation_id, exc) from None
        return {"id": conversation_id, "state": "closed"}

    @router.post("/api/chats/{conversation_id}/handback")
    async def hand_back(conversation_id: int, principal: Principal = staff) -> dict[str, Any]:
        agent = mine(principal)
        live = engine.live(conversation_id)
        holder = live.agent if live is not None else None
        if live is None:
            held = await _held_elsewhere(conversation_id)
            holder = held.get("agent") if held is not None else None
            if held is None:
                raise not_found(conversation_id)
        if agent is not None and holder != agent:
            raise not_found(conversation_id)
        try:
            await engine.hand_back(conversation_id, agent=holder or "")
        except ChatError as exc:
            raise act_error(conversation_id, exc) from None
        return {"id": conversation_id, "state": "waiting"}

    @router.post("/api/chats/{conversation_id}/transfer")
    async def transfer(
        conversation_id: int, body: TransferBody, principal: Principal = staff
    ) -> dict[str, Any]:
        agent = mine(principal)
        try:
            await engine.transfer(
                conversation_id,
                queue=body.queue,
                agent=body.agent,
                by=f"agent:{principal.username}",
                holder=agent,
            )
        except ChatError as exc:
            raise act_error(conversation_id, exc) from None
        live = engine.live(conversation_id)
        if live is None and (held := await _held_elsewhere(conversation_id)) is not None:
            return held
        return live.summary() if live is not None else {"id": conversation_id}

    @router.post("/api/chats/away")
    async def away(principal: Principal = staff) -> dict[str, Any]:
        agent = mine(principal)
        if agent is None:
            raise HTTPException(409, "only an agent has an inbox to close")
        return {"requeued": engine.agent_away(agent)}

    @router.get("/agent/chats", include_in_schema=False)
    def inbox_page(request: Request) -> Response:
        principal = access.identify(request, request.headers.get("authorization"))
        if principal is None or principal.must_change_password or principal.role not in STAFF:
            why = "login" if principal is None or principal.must_change_password else "role"
            return RedirectResponse(
                f"/?next=/agent/chats&why={why}", status_code=303, headers={"Cache-Control": "no-store"}
            )
        return FileResponse(
            WEB_DIR / "inbox.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
        )

    return router


ASSIST_MESSAGES = 6  # the customer's latest messages the suggestions are found for


async def _suggestions(suggester: Suggester, text: str, language: str | None) -> list[dict[str, object]]:
    if not text.strip():
        return []
    try:
        hits = await suggester.suggest(text, language, 3)
    except Exception:  # noqa: BLE001 - assist is a help: a failing search must not break the inbox
        log.warning("chat assist: suggestions failed", exc_info=True)
        return []
    return [Suggestion.from_hit(hit).as_json() for hit in hits]
