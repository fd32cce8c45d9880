"""Agent accounts over REST (the admin console's agents page).

``GET /api/agents`` (admin, supervisor): each account with its live state and whether a phone is
registered. ``POST`` / ``PATCH`` / ``DELETE /api/agents[/{name}]`` (admin) change accounts; the router
sees a change at once (the next routing decision uses it; a call in progress is not affected). A delete
is refused (409) while the agent rings or is on a call; afterwards the phone's registration is dropped
and no longer authenticates. Writes are audited like the users API. Passwords are never returned.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from callcenter.api.access import ADMIN, SUPERVISORS, Access
from callcenter.auth.service import Principal
from callcenter.core.errors import CallcenterError
from callcenter.store import AgentExistsError, InvalidAgentError, Store

__all__ = ["AgentBody", "AgentPatch", "AgentsLive", "create_agents_router"]

_NAME = r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,64}$"  # as the store checks it (RFC 3261 §25.1 user)


class AgentsLive(Protocol):
    """The running ACD (calls/acd.py ``Acd``)."""

    def snapshot(self) -> dict[str, Any]: ...

    def registered(self, username: str) -> bool: ...

    def define_agent(self, agent: Any) -> None: ...

    def remove_agent(self, username: str) -> None: ...


Skills = dict[str, int]


class AgentBody(BaseModel):
    name: str = Field(pattern=_NAME)
    password: str = Field(min_length=1, max_length=1024)
    display_name: str | None = Field(None, max_length=128)
    skills: Skills = Field(default_factory=dict, description="skill → level 1-5")
    languages: list[str] = Field(default_factory=list, description="language tags, e.g. en, zh-CN")
    max_chats: int | None = Field(
        None, ge=0, description="concurrent chats (default: routing.default_max_chats)"
    )


class AgentPatch(BaseModel):
    password: str | None = Field(None, min_length=1, max_length=1024)
    display_name: str | None = Field(None, max_length=128)
    skills: Skills | None = None
    languages: list[str] | None = None
    max_chats: int | None = Field(None, ge=0)


def _check_levels(skills: Skills | None) -> None:
    for skill, level in (skills or {}).items():
        if isinstance(level, bool) or not 1 <= level <= 5:
            raise HTTPException(422, f"skill {skill}: expected a level 1-5, got {level!r}")


def create_agents_router(
    store: Store, acd: AgentsLive, access: Access, *, realm: str, default_max_chats: int
) -> APIRouter:
    """``realm``: sip.realm (new agents' digest hashes); ``default_max_chats``: routing.default_max_chats."""
    router = APIRouter(prefix="/api/agents", tags=["agents"])
    readers = Depends(access.require(*SUPERVISORS))
    admin = Depends(access.require(*ADMIN))

    def as_json(agent: Any, live: dict[str, Any]) -> dict[str, Any]:
        state = live.get(agent.username, {}).get("state", "offline")
        return {
            "name": agent.username,
            "display_name": agent.display_name,
            "skills": dict(agent.skills or {}),
            "languages": list(agent.languages or []),
            "max_chats": agent.max_chats if agent.max_chats is not None else default_max_chats,
            "registered": acd.registered(agent.username),
            "state": state,
        }

    @router.get("", dependencies=[readers])
    async def list_agents() -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(store.list_agents)
        live = acd.snapshot()["agents"]
        return [as_json(a, live) for a in rows]

    @router.post("", status_code=201)
    async def add_agent(body: AgentBody, request: Request, principal: Principal = admin) -> dict[str, Any]:
        _check_levels(body.skills)
        try:
            agent = await asyncio.to_thread(
                store.add_agent, body.name, body.password, realm, body.skills, body.languages,
                max_chats=body.max_chats, display_name=body.display_name,
            )
        except AgentExistsError as exc:
            raise HTTPException(409, str(exc)) from None
        except InvalidAgentError as exc:
            raise HTTPException(422, str(exc)) from None
        acd.define_agent(agent)
        access.audit(principal, "agent_added", agent.username, request,
                     **body.model_dump(exclude={"password", "name"}, exclude_none=True))
        return as_json(agent, acd.snapshot()["agents"])

    @router.patch("/{name}")
    async def change_agent(
        name: str, body: AgentPatch, request: Request, principal: Principal = admin
    ) -> dict[str, Any]:
        _check_levels(body.skills)
        try:
            agent = await asyncio.to_thread(
                store.update_agent, name, password=body.password, skills=body.skills,
                languages=body.languages, max_chats=body.max_chats, display_name=body.display_name,
            )
        except InvalidAgentError as exc:
            raise HTTPException(422, str(exc)) from None
        if agent is None:
            raise HTTPException(404, f"no agent {name!r}")
        acd.define_agent(agent)
        detail = body.model_dump(exclude={"password"}, exclude_none=True)
        if body.password is not None:
            detail["password_changed"] = True
        access.audit(principal, "agent_changed", name, request, **detail)
        return as_json(agent, acd.snapshot()["agents"])

    @router.delete("/{name}", status_code=204)
    async def remove_agent(name: str, request: Request, principal: Principal = admin) -> Response:
        if await asyncio.to_thread(store.get_agent, name) is None:
            raise HTTPException(404, f"no agent {name!r}")
        try:
            acd.remove_agent(name)  # first, on the loop: no offer can slip in between check and removal
        except CallcenterError as exc:  # routing's InvalidTransition: ringing or on a call
            raise HTTPException(409, str(exc)) from None
        await asyncio.to_thread(store.remove_agent, name)
        access.audit(principal, "agent_removed", name, request)
        return Response(status_code=204)

    return router

