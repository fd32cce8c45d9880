"""Live routing over HTTP: queues and agents as the ACD sees them now, and agents' state changes.

Reading is open like ``/healthz`` for now (no caller data in it); changing an agent's state needs the
admin bearer token (``http.admin_token``) until users and roles arrive (issue 8).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from callcenter.api.auth import require_admin_token
from callcenter.core.errors import CallcenterError

__all__ = ["RoutingView", "StateChange", "create_routing_router"]


class RoutingView(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    def set_state(self, username: str, state: str, reason: str | None = None) -> dict[str, Any]: ...


class StateChange(BaseModel):
    state: Literal["available", "not_ready", "offline"]
    reason: str | None = Field(None, max_length=100, description="why not ready (break, training, ...)")


def create_routing_router(acd: RoutingView, admin_token: str | None) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["routing"])
    admin = Depends(require_admin_token(admin_token))

    @router.get("/queues")
    async def queues() -> dict[str, Any]:
        """Per queue: callers waiting, the longest wait, agents by state, today's counters."""
        return dict(acd.snapshot()["queues"])

    @router.get("/agents/live")
    async def agents_live() -> dict[str, Any]:
        """Per agent: state, since when, reason, skills, the call they are on."""
        return dict(acd.snapshot()["agents"])

    @router.post("/agents/{username}/state", dependencies=[admin])
    async def set_agent_state(username: str, change: StateChange) -> dict[str, Any]:
        try:
            return acd.set_state(username, change.state, change.reason)
        except KeyError:
            raise HTTPException(404, f"no agent {username!r}") from None
        except CallcenterError as exc:  # routing's InvalidTransition: e.g. offline while on a call
            raise HTTPException(409, str(exc)) from None

    return router
