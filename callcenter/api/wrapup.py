"""Wrap-up codes and the ticket form the agent's page fills from the call.

- ``GET /api/wrap-up-codes`` (any role): ``routing.wrap_up_codes`` as ``[{code, label}]``.
- ``POST /api/calls/{call_id}/wrap-up {code, note?}`` (the call's agent, supervisors, admins): stores
  ``wrap_up_code`` / ``wrap_up_note`` on the call record (shown by ``/api/calls`` and ``calls list
  --json``) and, when the call's agent is in wrap-up after this call, ends the wrap-up at once (the
  router's WRAP_UP_DONE: a not-ready asked for during the call still applies). 404 unknown call, 422
  unknown code, 403 another agent's call.
- ``GET /api/calls/{call_id}/ticket-draft`` (same roles): subject (from the intent, else the caller's
  first sentence), description (the extractive summary of tickets/summary.py), category (the intent
  through ``tickets.categories``), the customer found by the caller's number and that customer's most
  recent open ticket — what the form starts with; the agent edits it and saves through the tickets API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import update

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.store import Store, call_public
from callcenter.store.models import CallRecord
from callcenter.tickets.summary import split_sentences, summarize

__all__ = ["AcdWrapUp", "WrapUpBody", "WrapUpEnder", "create_wrapup_router", "ticket_draft"]

LiveView = Callable[[str], dict[str, Any] | None]
# caller (number or URI) → (customer id, name, open ticket {number, subject} or None), or None
CustomerLookup = Callable[[str], tuple[int, str, dict[str, Any] | None] | None]
_OPEN = ("new", "open", "pending")


class WrapUpEnder(Protocol):
    def end_wrap_up(self, call_id: str) -> str | None:
        """End the wrap-up that follows ``call_id``; the agent's name, or None when no one is in it."""
        ...


class AcdWrapUp:
    """``WrapUpEnder`` over the running ACD (calls/acd.py): the router's wrap-up-done event."""

    def __init__(self, acd: Any) -> None:
        self.acd = acd

    def end_wrap_up(self, call_id: str) -> str | None:
        from callcenter.routing.agents import AgentEvent, AgentState

        router = self.acd.router
        for agent in router.agents:
            if agent.state is AgentState.WRAP_UP and agent.last_call_id == call_id:
                router.agent_event(agent.name, AgentEvent.WRAP_UP_DONE, self.acd.clock())
                self.acd.kick()  # logs the change (agent_state, wrap_up_s) and wakes the dispatcher
                return str(agent.name)
        return None


class WrapUpBody(BaseModel):
    code: str = Field(min_length=1, max_length=32)
    note: str | None = Field(None, max_length=2000)


def _agents_of(call: Mapping[str, Any]) -> set[str]:
    return {a for a in [call.get("agent"), *(call.get("agents") or [])] if isinstance(a, str)}


def _caller_number(call: Mapping[str, Any]) -> str | None:
    caller = call.get("caller") or call.get("from")
    return str(caller) if caller else None


def ticket_draft(call: Mapping[str, Any], categories: Mapping[str, str]) -> dict[str, Any]:
    """Subject, description and category for a ticket about ``call`` (a live view or a record)."""
    transcript = [
        (str(u.get("speaker", "")), str(u.get("text", "")))
        for u in call.get("transcript") or []
        if isinstance(u, Mapping)
    ]
    summary = summarize(transcript)
    intent = call.get("intent") if isinstance(call.get("intent"), str) else None
    said = [text for speaker, text in transcript if speaker in ("caller", "customer") and text.strip()]
    first = split_sentences(said[0])[0] if said and split_sentences(said[0]) else None
    if intent:
        subject = intent.replace("_", " ").replace("-", " ").capitalize()
        if first:
            subject = f"{subject}: {first}"
    elif first:
        subject = first
    else:
        subject = f"Call from {_caller_number(call) or 'unknown caller'}"
    return {
        "subject": subject[:200],
        "description": summary.text,
        "category": categories.get(intent, intent) if intent else None,
        "intent": intent,
        "entities": summary.entities,
    }


def create_wrapup_router(
    store: Store,
    access: Access,
    *,
    codes: Sequence[tuple[str, str]],
    live: LiveView | None = None,
    ender: WrapUpEnder | None = None,
    customers: CustomerLookup | None = None,
    categories: Mapping[str, str] | None = None,
    flush: Callable[[float], bool] | None = None,
) -> APIRouter:
    """``codes``: (code, label) pairs; ``live``: the live view of a call up now (else the record is read);
    ``ender``: ends the agent's wrap-up; ``customers``: finds the caller's customer and open ticket;
    ``flush(timeout_s)``: writes the call records still queued (blocking) — a call that has just left
    the live list may not be on its record yet (the writer lingers a moment)."""
    router = APIRouter(prefix="/api", tags=["calls"])
    staff = Depends(access.require(*STAFF))
    labels = dict(codes)
    category_of = dict(categories or {})

    async def lookup(call_id: str) -> dict[str, Any] | None:
        view = live(call_id) if live is not None else None
        record = await asyncio.to_thread(store.get_call, call_id)
        if view is None and record is None:
            return None
        return {**(call_public(record) if record is not None else {}), **(view or {})}

    def mine(call: dict[str, Any] | None, principal: Principal) -> bool:
        if call is None:
            return False
        if principal.role in SUPERVISORS:
            return True
        return principal.agent is not None and principal.agent in _agents_of(call)

    async def call_for(call_id: str, principal: Principal) -> dict[str, Any]:
        call = await lookup(call_id)
        if not mine(call, principal) and flush is not None:
            # Ended a moment ago: its last details may still be in the record writer's queue.
            await asyncio.to_thread(flush, 5.0)
            call = await lookup(call_id)
        if call is None:
            raise HTTPException(404, f"no call {call_id!r}")
        if not mine(call, principal):
            raise HTTPException(403, "agents wrap up their own calls only")
        return call

    @router.get("/wrap-up-codes", dependencies=[staff])
    def list_codes() -> list[dict[str, str]]:
        return [{"code": code, "label": label} for code, label in labels.items()]

    @router.post("/calls/{call_id}/wrap-up")
    async def wrap_up(
        call_id: str, body: WrapUpBody, request: Request, principal: Principal = staff
    ) -> dict[str, Any]:
        await call_for(call_id, principal)
        if body.code not in labels:
            raise HTTPException(
                422, f"unknown wrap-up code {body.code!r}; expected one of {', '.join(labels)}"
            )
        note = (body.note or "").strip() or None

        def write() -> int:
            with store.engine.begin() as conn:
                result = conn.execute(
                    update(CallRecord)
                    .where(CallRecord.sip_call_id == call_id)  # type: ignore[arg-type]
                    .values(wrap_up_code=body.code, wrap_up_note=note)
                )
                return int(result.rowcount)

        if not await asyncio.to_thread(write):
            raise HTTPException(409, f"call {call_id!r} has no record yet: try again in a moment")
        ended = ender.end_wrap_up(call_id) if ender is not None else None
        return {
            "call_id": call_id,
            "wrap_up_code": body.code,
            "wrap_up_note": note,
            "ended_for": ended,  # whose wrap-up this ended (None: nobody was in it)
        }

    @router.get("/calls/{call_id}/ticket-draft")
    async def draft(call_id: str, principal: Principal = staff) -> dict[str, Any]:
        call = await call_for(call_id, principal)
        out = ticket_draft(call, category_of)
        out.update(call_id=call_id, customer=None, open_ticket=None)
        caller = _caller_number(call)
        if customers is not None and caller:
            found = await asyncio.to_thread(customers, caller)
            if found is not None:
                customer_id, name, open_ticket = found
                out.update(customer={"id": customer_id, "name": name}, open_ticket=open_ticket)
        return out

    return router


def customer_lookup(customers: Any, tickets: Any) -> CustomerLookup:
    """A ``CustomerLookup`` over the CustomerRepo and TicketRepo (blocking: called in a thread)."""
    from callcenter.tickets.repo import TicketFilter

    def lookup(caller: str) -> tuple[int, str, dict[str, Any] | None] | None:
        customer = customers.find(phone=caller)
        if customer is None or customer.id is None:
            return None
        rows = tickets.list_tickets(where=TicketFilter(status=_OPEN, customer_id=customer.id), limit=1)
        latest = {"number": rows[0].number, "subject": rows[0].subject} if rows else None
        return int(customer.id), str(customer.name or ""), latest

    return lookup
