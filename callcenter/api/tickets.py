"""``/api/tickets``, ``/api/customers`` and ``/api/csat``.

Who sees what (every route declares its roles, see api/access.py):

* supervisors and admins: every ticket and customer, CSAT reports;
* agents: tickets **assigned to them** (their SIP agent name, else their username) or **in a queue they
  serve** (a configured queue whose required skills their agent has; a queue without required skills
  is everyone's). Another ticket is 403 for them, a ticket that does not exist 404. Agents may take a
  ticket (assign it to themselves) or unassign it, but not assign it to someone else, and may not
  change a customer's VIP level. Agents see and create customers (screen-pop, new callers).

A ticket filed with ``call_id`` (the agent page sends the call it shows) is linked to that call's
conversation — the post-call path later stores the transcript in it and updates this ticket instead of
filing another; the conversation is created now when the call has none yet. Agents link their own
calls only (403); a call unknown is 422, a call whose conversation already has a ticket 409.

Errors: 404 unknown ticket/customer, 409 a status change the table refuses or a phone/OpenID/CRM id
owned by another customer, 422 invalid input. Handlers are plain ``def``: FastAPI runs them (and
their blocking SQL) in its thread pool. Changes are audited as ticket events by ``agent:NAME`` for
agents and ``api:USERNAME`` for others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.customers import (
    CustomerConflict,
    CustomerError,
    CustomerNotFound,
    CustomerRepo,
    customer_public,
)
from callcenter.store.crm import Conversation, Ticket
from callcenter.tickets.repo import (
    TicketError,
    TicketFilter,
    TicketNotFound,
    TicketRepo,
    conversation_public,
    event_public,
    ticket_public,
)
from callcenter.tickets.states import InvalidTransition

__all__ = ["AgentQueues", "CallLookup", "agent_queues_from_skills", "tickets_router"]

AgentQueues = Callable[[Principal], Collection[str]]
# call id → the call (live view over its record: agent/agents, caller, queue, started_at), None: unknown
CallLookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]
PriorityName = Literal["low", "normal", "high", "urgent"]
StatusName = Literal["new", "open", "pending", "solved", "closed"]
_Tag = Annotated[str, Field(min_length=1, max_length=64)]
_Phone = Annotated[str, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TicketCreate(_Body):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field("", max_length=20_000)
    priority: PriorityName = "normal"
    queue: str | None = Field(None, min_length=1, max_length=64)
    tags: list[_Tag] = Field(default_factory=list, max_length=50)
    category: str | None = Field(None, max_length=64)
    customer_id: int | None = Field(None, ge=1)
    assignee: str | None = Field(None, min_length=1, max_length=64)
    call_id: str | None = Field(None, min_length=1, max_length=255, description="link this call")


class TicketPatch(_Body):
    status: StatusName | None = None
    priority: PriorityName | None = None
    assignee: str | None = Field(None, min_length=1, max_length=64, description="null: unassign")
    queue: str | None = Field(None, min_length=1, max_length=64)
    add_tags: list[_Tag] = Field(default_factory=list, max_length=50)
    remove_tags: list[_Tag] = Field(default_factory=list, max_length=50)


class NoteCreate(_Body):
    text: str = Field(min_length=1, max_length=20_000)


class CustomerCreate(_Body):
    name: str = Field("", max_length=200)
    phones: list[_Phone] = Field(default_factory=list, max_length=20)
    email: str | None = Field(None, max_length=254)
    wechat_openid: str | None = Field(None, max_length=128)
    vip_level: int = Field(0, ge=0, le=9)
    external_id: str | None = Field(None, max_length=128)


class CustomerPatch(_Body):
    name: str | None = Field(None, max_length=200)
    phones: list[_Phone] | None = Field(None, max_length=20)
    email: str | None = Field(None, max_length=254, description="null: remove")
    wechat_openid: str | None = Field(None, max_length=128, description="null: remove")
    vip_level: int | None = Field(None, ge=0, le=9)
    external_id: str | None = Field(None, max_length=128, description="null: remove")


def _agents_of(call: Mapping[str, Any]) -> set[str]:
    return {a for a in [call.get("agent"), *(call.get("agents") or [])] if isinstance(a, str)}


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def agent_queues_from_skills(
    skills_of: Callable[[str], Mapping[str, int] | None], queues: Mapping[str, Mapping[str, int]]
) -> AgentQueues:
    """The queues an agent serves: ``queues`` maps a queue to its required skills (config
    ``routing.queues.NAME.skills``), ``skills_of(agent)`` gives the SIP agent's skills (None: unknown)."""

    def serves(principal: Principal) -> Collection[str]:
        have = skills_of(principal.agent or principal.username) or {}
        return {
            name for name, need in queues.items() if all(have.get(s, 0) >= lvl for s, lvl in need.items())
        }

    return serves


def tickets_router(
    repo: TicketRepo,
    customers: CustomerRepo,
    *,
    access: Access,
    agent_queues: AgentQueues = lambda principal: (),
    calls: CallLookup | None = None,
) -> APIRouter:
    """``calls`` finds a call for ``TicketCreate.call_id`` (None: tickets cannot name calls)."""
    router = APIRouter(prefix="/api")
    # Defaults, not Annotated aliases: annotations are strings here and FastAPI resolves them in the
    # module's globals.
    staff = Depends(access.require(*STAFF))
    supervisors = Depends(access.require(*SUPERVISORS))

    def is_agent(p: Principal) -> bool:
        return p.role == "agent"

    def me(p: Principal) -> str:
        return p.agent or p.username

    def actor(p: Principal) -> str:
        return f"agent:{me(p)}" if is_agent(p) else f"api:{p.username}"

    def scope(p: Principal) -> tuple[frozenset[str], frozenset[str]] | None:
        if not is_agent(p):
            return None
        return frozenset({me(p), p.username}), frozenset(agent_queues(p))

    def check_visible(p: Principal) -> Callable[[Ticket], None]:
        def check(ticket: Ticket) -> None:
            visible = scope(p)
            if visible is not None and ticket.assignee not in visible[0] and ticket.queue not in visible[1]:
                raise HTTPException(403, "this ticket is neither assigned to you nor in one of your queues")

        return check

    def ticket_or_404(number: int) -> Any:
        try:
            return repo.get(number)
        except TicketNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    # -- tickets -----------------------------------------------------------------------------------------

    @router.get("/tickets", tags=["tickets"])
    def list_tickets(
        principal: Principal = staff,
        status: Annotated[list[StatusName], Query()] = [],  # noqa: B006 - FastAPI copies query defaults
        priority: Annotated[list[PriorityName], Query()] = [],  # noqa: B006
        queue: str | None = None,
        assignee: Annotated[str | None, Query(description="a name, or 'me'")] = None,
        customer_id: int | None = None,
        tag: str | None = None,
        q: Annotated[str | None, Query(max_length=200, description="in the subject")] = None,
        sla_breached: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Tickets, most recently changed first, with the total for paging. Agents see their own."""
        where = TicketFilter(
            status=tuple(status), priority=tuple(priority), queue=queue,
            assignee=me(principal) if assignee == "me" else assignee, customer_id=customer_id, tag=tag,
            text=q, sla_breached=sla_breached, visible_to=scope(principal),
        )  # fmt: skip
        rows = repo.list_tickets(where=where, limit=limit, offset=offset)
        return {
            "items": [ticket_public(t) for t in rows],
            "total": repo.count(where=where),
            "limit": limit,
            "offset": offset,
        }

    @router.get("/tickets/{number}", tags=["tickets"])
    def get_ticket(number: int, principal: Principal = staff) -> dict[str, Any]:
        """One ticket with its customer, its conversations (transcripts) and its audit trail."""
        detail = ticket_or_404(number)
        check_visible(principal)(detail.ticket)
        customer = detail.customer
        return {
            **ticket_public(detail.ticket),
            "body": detail.ticket.body,
            "customer": customer_public(customer, customers.get(customer.id)[1])  # type: ignore[index]
            if customer is not None and customer.id is not None
            else None,
            "conversations": [conversation_public(c, m) for c, m in detail.conversations],
            "events": [event_public(e) for e in detail.events],
        }

    async def call_for(call_id: str, principal: Principal) -> Mapping[str, Any]:
        call = await calls(call_id) if calls is not None else None
        if call is None:
            raise HTTPException(422, f"call_id {call_id!r}: no such call")
        if is_agent(principal) and principal.agent not in _agents_of(call):
            raise HTTPException(403, "agents link their own calls only")
        return call

    def link_call(
        session: Session, ticket: Ticket, call_id: str, call: Mapping[str, Any], customer_id: int | None,
        who: str,
    ) -> None:
        """Link the call's conversation (made now when the post-call path has not stored it yet)."""
        conv = session.exec(select(Conversation).where(Conversation.call_id == call_id)).first()
        if conv is None:
            started = call.get("started_at")
            conv = Conversation(
                call_id=call_id, address=_text(call.get("caller")), queue=_text(call.get("queue")),
                agent=_text(call.get("agent")),
                started_at=datetime.fromisoformat(started) if isinstance(started, str) else repo.now(),
            )  # fmt: skip
        elif conv.ticket_id is not None and conv.ticket_id != ticket.id:
            raise HTTPException(
                409, f"call {call_id!r} is linked to ticket #{conv.ticket_id} already: add a note to it"
            )
        conv.ticket_id = ticket.id
        if conv.customer_id is None:
            conv.customer_id = customer_id
        session.add(conv)
        session.flush()
        repo.log(session, ticket, who, "conversation", None, str(conv.id))

    def file_ticket(
        body: TicketCreate, assignee: str | None, who: str, call: Mapping[str, Any] | None
    ) -> Ticket:
        """The ticket, its call's conversation and its assignee in one transaction."""
        with repo.session() as session:
            ticket = Ticket(
                subject=body.subject, body=body.body, priority=body.priority, queue=body.queue,
                tags=list(dict.fromkeys(body.tags)), category=body.category, customer_id=body.customer_id,
            )  # fmt: skip
            repo.insert(session, ticket, who)
            if call is not None and body.call_id is not None:
                link_call(session, ticket, body.call_id, call, body.customer_id, who)
            if assignee:
                repo.change(session, ticket, who, "assignee", assignee)
                if ticket.status == "new":
                    repo.change(session, ticket, who, "status", "open")
            session.commit()
            return ticket

    @router.post("/tickets", tags=["tickets"], status_code=201)
    async def create_ticket(body: TicketCreate, principal: Principal = staff) -> dict[str, Any]:
        """A ticket filed by hand (an agent's is assigned to them unless they name no one else), about
        the call ``call_id`` when given."""
        if is_agent(principal) and body.assignee not in (None, me(principal)):
            raise HTTPException(403, "agents assign tickets to themselves only")
        call = await call_for(body.call_id, principal) if body.call_id is not None else None
        if body.customer_id is not None and await asyncio.to_thread(customers.get, body.customer_id) is None:
            raise HTTPException(422, f"customer_id {body.customer_id}: no such customer")
        assignee = me(principal) if is_agent(principal) else body.assignee
        who = actor(principal)
        for attempt in range(2):
            try:
                ticket = await asyncio.to_thread(file_ticket, body, assignee, who, call)
                break
            except TicketError as exc:
                raise HTTPException(422, str(exc)) from None
            except IntegrityError:  # the post-call path stored the call's conversation meanwhile
                if attempt:
                    raise
        return ticket_public(ticket)

    @router.patch("/tickets/{number}", tags=["tickets"])
    def change_ticket(number: int, body: TicketPatch, principal: Principal = staff) -> dict[str, Any]:
        """Change status, priority, assignee (null: unassign), queue and tags in one go."""
        unassign = "assignee" in body.model_fields_set and body.assignee is None
        if is_agent(principal) and body.assignee is not None and body.assignee != me(principal):
            raise HTTPException(403, "agents assign tickets to themselves only")
        try:
            ticket = repo.update(
                number, actor=actor(principal), status=body.status, priority=body.priority,
                queue=body.queue, assignee=body.assignee, unassign=unassign, add_tags=body.add_tags,
                remove_tags=body.remove_tags, check=check_visible(principal),
            )  # fmt: skip
        except TicketNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except InvalidTransition as exc:
            raise HTTPException(409, str(exc)) from None
        except TicketError as exc:
            raise HTTPException(422, str(exc)) from None
        return ticket_public(ticket)

    @router.post("/tickets/{number}/notes", tags=["tickets"], status_code=201)
    def add_note(number: int, body: NoteCreate, principal: Principal = staff) -> dict[str, Any]:
        """An internal note; an agent's first note is the ticket's first response (SLA)."""
        check_visible(principal)(ticket_or_404(number).ticket)
        try:
            ticket = repo.add_note(number, body.text, actor=actor(principal))
        except TicketNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return ticket_public(ticket)

    # -- customers ---------------------------------------------------------------------------------------

    def customer_json(customer_id: int, principal: Principal) -> dict[str, Any]:
        found = customers.get(customer_id)
        if found is None:
            raise HTTPException(404, f"no customer {customer_id}")
        where = TicketFilter(customer_id=customer_id, visible_to=scope(principal))
        tickets = repo.list_tickets(where=where, limit=20)
        return {**customer_public(*found), "tickets": [ticket_public(t) for t in tickets]}

    @router.get("/customers", tags=["customers"])
    def list_customers(
        principal: Principal = staff,
        q: Annotated[str | None, Query(max_length=200, description="name, email or phone number")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        rows = customers.list_customers(limit=limit, offset=offset, search=q or None)
        return {
            "items": [customer_public(c, phones) for c, phones in rows],
            "total": customers.count_matching(q or None),
            "limit": limit,
            "offset": offset,
        }

    @router.get("/customers/{customer_id}", tags=["customers"])
    def get_customer(customer_id: int, principal: Principal = staff) -> dict[str, Any]:
        """A customer with their 20 most recent tickets (an agent's view: those they may see)."""
        return customer_json(customer_id, principal)

    @router.post("/customers", tags=["customers"], status_code=201)
    def create_customer(body: CustomerCreate, principal: Principal = staff) -> dict[str, Any]:
        if is_agent(principal) and body.vip_level:
            raise HTTPException(403, "a VIP level is set by a supervisor")
        try:
            customer = customers.add(
                body.name, body.phones, email=body.email, wechat_openid=body.wechat_openid,
                vip_level=body.vip_level, external_id=body.external_id,
            )  # fmt: skip
        except CustomerConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except CustomerError as exc:
            raise HTTPException(422, str(exc)) from None
        assert customer.id is not None
        return customer_json(customer.id, principal)

    @router.patch("/customers/{customer_id}", tags=["customers"])
    def change_customer(
        customer_id: int, body: CustomerPatch, principal: Principal = staff
    ) -> dict[str, Any]:
        """Change the given fields; ``phones`` replaces the numbers; null email/OpenID/CRM id removes it."""
        given = body.model_fields_set
        if is_agent(principal) and "vip_level" in given:
            raise HTTPException(403, "a VIP level is set by a supervisor")
        if ("name" in given and body.name is None) or ("vip_level" in given and body.vip_level is None):
            raise HTTPException(422, "name and vip_level cannot be null")
        clearable = ("email", "wechat_openid", "external_id")
        clear = [k for k in clearable if k in given and getattr(body, k) is None]
        try:
            customers.update(
                customer_id, name=body.name, phones=body.phones, email=body.email,
                wechat_openid=body.wechat_openid, vip_level=body.vip_level, external_id=body.external_id,
                clear=clear,
            )  # fmt: skip
        except CustomerNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except CustomerConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except CustomerError as exc:
            raise HTTPException(422, str(exc)) from None
        return customer_json(customer_id, principal)

    # -- CSAT ----------------------------------------------------------------------------------------------

    @router.get("/csat", tags=["tickets"])
    def csat(
        principal: Principal = supervisors,
        by: Literal["agent", "queue"] = "agent",
        since: datetime | None = None,
    ) -> JSONResponse:
        """Average CSAT (1-5) and the share of 4s and 5s per agent or per queue, best first."""
        rows = repo.csat_by_agent(since=since) if by == "agent" else repo.csat_by_queue(since=since)
        return JSONResponse(
            [{by: r.key, "count": r.count, "average": r.average, "satisfied": r.satisfied} for r in rows]
        )

    return router
