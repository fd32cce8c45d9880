"""Supervisor listen / whisper / barge on a live call (calls/monitor.py does the work).

``POST /api/calls/{call_id}/monitor`` {"mode": "listen" | "whisper" | "barge", "phone": agent name}
rings the supervisor's phone — their own linked agent's phone; only an admin may name another
(``phone``) — and mixes it into the call once answered (202: it is ringing). ``POST .../monitor/mode``
{"mode": ...} switches live; ``DELETE .../monitor`` ends it (so does hanging up the phone, and the call
ending); ``GET .../monitor`` shows it.

Roles: admins and supervisors (agents 403, no credentials 401). 404: no such live call (or, for mode /
stop / get, the call is not monitored); 409: the call is not bridged to an agent now, is monitored
already, or the phone is busy or not registered; 422: a bad mode, no phone to ring, no such agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from callcenter.api.access import SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.core.errors import CallcenterError

__all__ = ["MonitorActions", "MonitorRequest", "create_monitor_router"]

LiveView = Callable[[str], dict[str, Any] | None]
ModeName = Literal["listen", "whisper", "barge"]


class MonitorActions(Protocol):
    """calls/monitor.py ``Monitors``. KeyError: no such (monitored / bridged) call; CallcenterError
    (MonitorError): not now; ValueError: bad input."""

    def start(self, call_id: str, mode: str, supervisor: str, phone: str) -> dict[str, Any]: ...

    def set_mode(self, call_id: str, mode: str) -> dict[str, Any]: ...

    def stop(self, call_id: str) -> dict[str, Any]: ...

    def view(self, call_id: str) -> dict[str, Any] | None: ...


class MonitorRequest(BaseModel):
    mode: ModeName = "listen"
    phone: str | None = Field(default=None, min_length=1, max_length=128,
                              description="the agent whose phone rings (admins only; default: your own)")


class ModeRequest(BaseModel):
    mode: ModeName


def create_monitor_router(monitors: MonitorActions | None, access: Access, live: LiveView) -> APIRouter:
    router = APIRouter(prefix="/api/calls", tags=["calls"])
    supervisors = Depends(access.require(*SUPERVISORS))

    def actions() -> MonitorActions:
        if monitors is None:
            raise HTTPException(503, "call control is not running")
        return monitors

    def phone_of(principal: Principal, wanted: str | None) -> str:
        if wanted is not None and wanted != principal.agent and principal.role != "admin":
            raise HTTPException(403, "only admins ring another agent's phone")
        phone = wanted or principal.agent
        if not phone:
            raise HTTPException(422, "no phone to ring: link an agent to your user (or, as admin, name one)")
        return phone

    @router.post("/{call_id}/monitor", status_code=202)
    async def start(
        call_id: str, request: MonitorRequest, principal: Principal = supervisors
    ) -> dict[str, Any]:
        """Ring the phone; it is mixed into the call in ``mode`` once answered."""
        acts = actions()
        phone = phone_of(principal, request.phone)
        try:
            return acts.start(call_id, request.mode, principal.username, phone)
        except KeyError:
            if live(call_id) is None:
                raise HTTPException(404, f"no live call {call_id!r}") from None
            raise HTTPException(409, "the call is not with an agent now") from None
        except CallcenterError as exc:
            raise HTTPException(409, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @router.post("/{call_id}/monitor/mode")
    async def set_mode(
        call_id: str, request: ModeRequest, principal: Principal = supervisors
    ) -> dict[str, Any]:
        try:
            return actions().set_mode(call_id, request.mode)
        except KeyError:
            raise HTTPException(404, f"call {call_id!r} is not monitored") from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @router.delete("/{call_id}/monitor")
    async def stop(call_id: str, principal: Principal = supervisors) -> dict[str, Any]:
        try:
            return actions().stop(call_id)
        except KeyError:
            raise HTTPException(404, f"call {call_id!r} is not monitored") from None

    @router.get("/{call_id}/monitor")
    async def get(call_id: str, principal: Principal = supervisors) -> dict[str, Any]:
        view = actions().view(call_id)
        if view is None:
            raise HTTPException(404, f"call {call_id!r} is not monitored")
        return view

    return router
