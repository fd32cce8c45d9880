"""Live routing over HTTP: queues and agents as the ACD sees them now, and agents' state changes.

Reading needs a login (any role); supervisors and admins change any agent's state, an agent their own
(see api/access.py).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from callcenter.api.access import STAFF, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.core.errors import CallcenterError

__all__ = ["RoutingView", "StateChange", "create_routing_router"]


class RoutingView(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    def set_state(self, username: str, state: str, reason: str | None = None) -> dict[str, Any]: ...


class StateChange(BaseModel):
    state: Literal["available", "not_ready", "offline"]
    reason: str | None = Field(None, max_length=100, description="why not ready (break, training, ...)")


def create_routing_router(acd: RoutingView, access: Access) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["routing"])
    staff = Depends(access.require(*STAFF))

    @router.get("/queues", dependencies=[staff])
    async def queues() -> dict[str, Any]:
        """Per queue: callers waiting, the longest wait, agents by state, today's counters."""
        return dict(acd.snapshot()["queues"])

    @router.get("/agents/live", dependencies=[staff])
    async def agents_live() -> dict[str, Any]:
        """Per agent: state, since when, reason, skills, the call they are on."""
        return dict(acd.snapshot()["agents"])

    @router.post("/agents/{username}/state")
    async def set_agent_state(
        username: str, change: StateChange, principal: Principal = staff
    ) -> dict[str, Any]:
        """Supervisors and admins set anyone's state; an agent only their own."""
        if principal.role not in SUPERVISORS and principal.agent != username:
            raise HTTPException(403, "agents change their own state only")
        try:
            return acd.set_state(username, change.state, change.reason)
        except KeyError:
            raise HTTPException(404, f"no agent {username!r}") from None
        except CallcenterError as exc:  # routing's InvalidTransition: e.g. offline while on a call
            raise HTTPException(409, str(exc)) from None

    return router
