"""``GET /api/calls/{call_id}``: one call, live (what the agent's screen-pop link shows while it rings:
caller, IVR path, queue, transcript so far) or from its record once it ended.

``POST /api/calls/{call_id}/hold`` and ``/resume`` hold a bridged call server-side (the caller hears
hold music); ``/transfer`` {"to": "queue:NAME" | "agent:NAME" | SIP URI, "mode": "blind" | "attended"}
hands the caller on (blind) or rings the target for the agent first (attended: the caller hears hold
music until ``/transfer/complete`` bridges caller and target, or ``/transfer/cancel`` — or the target
declining or hanging up — brings the caller back). 404: no agent has that call now; 409: not now
(e.g. complete before the target answered); 422: nothing reachable by that name.

Roles: every route admits admins, supervisors and agents; an agent acts only on a call they have now
(403 otherwise). Call details include what the caller said: reading them needs a login too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from callcenter.api.access import STAFF, Access
from callcenter.auth.service import Principal
from callcenter.core.errors import CallcenterError
from callcenter.store import Store, call_public

__all__ = ["CallActions", "TransferRequest", "create_calls_router"]

LiveView = Callable[[str], dict[str, Any] | None]


class CallActions(Protocol):
    """What the ACD does to a bridged call (calls/acd.py). KeyError: no agent has the call now;
    CallcenterError (TransferError): not now; ValueError: no such target."""

    def hold_call(self, call_id: str) -> dict[str, Any]: ...

    def resume_call(self, call_id: str) -> dict[str, Any]: ...

    def transfer_call(self, call_id: str, to: str, mode: str) -> dict[str, Any]: ...

    def complete_transfer(self, call_id: str) -> dict[str, Any]: ...

    def cancel_transfer(self, call_id: str) -> dict[str, Any]: ...


class TransferRequest(BaseModel):
    to: str = Field(min_length=1, max_length=512, description="queue:NAME, agent:NAME or a SIP URI")
    mode: Literal["blind", "attended"] = "blind"


def _agents_of(call: dict[str, Any]) -> set[str]:
    names = [call.get("agent"), *(call.get("agents") or []), *(call.get("offered_agents") or [])]
    return {n for n in names if isinstance(n, str)}


def create_calls_router(
    live: LiveView,
    store: Store,
    access: Access,
    actions: CallActions | None = None,
    *,
    ringing: Callable[[str], str | None] | None = None,
    flush: Callable[[float], bool] | None = None,
) -> APIRouter:
    """``ringing(agent)``: the call ringing that agent now (their screen-pop opens it before they answer);
    ``flush(timeout_s)``: writes the call records still queued (a call that has just ended may not be on
    its record yet: the writer lingers a moment)."""
    router = APIRouter(prefix="/api/calls", tags=["calls"])
    staff = Depends(access.require(*STAFF))

    def act(
        call_id: str, principal: Principal, action: Callable[[CallActions], dict[str, Any]]
    ) -> dict[str, Any]:
        if principal.role == "agent":
            view = live(call_id)
            if view is None or view.get("agent") is None or view.get("agent") != principal.agent:
                raise HTTPException(403, "agents act on their own calls only")
        if actions is None:
            raise HTTPException(503, "call control is not running")
        try:
            return action(actions)
        except KeyError:
            raise HTTPException(404, f"no call {call_id!r} is with an agent now") from None
        except CallcenterError as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @router.post("/{call_id}/hold")
    async def hold(call_id: str, principal: Principal = staff) -> dict[str, Any]:
        """The caller hears hold music until /resume."""
        return act(call_id, principal, lambda a: a.hold_call(call_id))

    @router.post("/{call_id}/resume")
    async def resume(call_id: str, principal: Principal = staff) -> dict[str, Any]:
        return act(call_id, principal, lambda a: a.resume_call(call_id))

    @router.post("/{call_id}/transfer", status_code=202)
    async def transfer(
        call_id: str, request: TransferRequest, principal: Principal = staff
    ) -> dict[str, Any]:
        return act(call_id, principal, lambda a: a.transfer_call(call_id, request.to, request.mode))

    @router.post("/{call_id}/transfer/complete")
    async def complete(call_id: str, principal: Principal = staff) -> dict[str, Any]:
        return act(call_id, principal, lambda a: a.complete_transfer(call_id))

    @router.post("/{call_id}/transfer/cancel")
    async def cancel(call_id: str, principal: Principal = staff) -> dict[str, Any]:
        return act(call_id, principal, lambda a: a.cancel_transfer(call_id))

    @router.get("/{call_id}")
    async def get_call(call_id: str, principal: Principal = staff) -> dict[str, Any]:
        """A live call's view or an ended call's record. Agents see only calls offered to them or that
        they took part in (the transcript is the customer's words)."""
        async def read() -> dict[str, Any] | None:
            view = live(call_id)
            if view is not None:
                return view
            record = await asyncio.to_thread(store.get_call, call_id)
            return None if record is None else {**call_public(record), "live": False}

        def allowed(call: dict[str, Any] | None) -> bool:
            if call is None or principal.role != "agent":
                return True
            agent = principal.agent
            ringing_me = agent is not None and ringing is not None and _ringing(ringing, agent) == call_id
            return agent is not None and (agent in _agents_of(call) or ringing_me)

        call = await read()
        if (call is None or not allowed(call)) and flush is not None:
            # Ended a moment ago: its record (and who took it) may still be in the writer's queue.
            await asyncio.to_thread(flush, 5.0)
            call = await read()
        if call is None:
            raise HTTPException(404, f"no call {call_id!r}")
        if not allowed(call):
            raise HTTPException(403, "agents see their own calls only")
        return call

    return router


def _ringing(ringing: Callable[[str], str | None], agent: str) -> str | None:
    try:
        return ringing(agent)
    except KeyError:  # not an agent the router knows
        return None
