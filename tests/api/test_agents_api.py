"""/api/agents: accounts over REST, roles, audit, and the live router seeing changes at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from api_helpers import ADMIN_TOKEN, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.agents import create_agents_router
from callcenter.auth.service import UserService
from callcenter.calls.acd import Acd
from callcenter.core.config import Settings
from callcenter.routing.agents import AgentEvent
from callcenter.store import Store

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class _Registration:
    def __init__(self) -> None:
        self.listeners: list[Any] = []
        self.bound: set[str] = set()
        self.forgotten: list[tuple[str, bool]] = []

    def lookup(self, username: str) -> list[Any]:
        return [object()] if username in self.bound else []

    def forget(self, username: str, *, unbind: bool = False) -> None:
        self.forgotten.append((username, unbind))
        if unbind:
            self.bound.discard(username)


@pytest.fixture
def acd() -> Acd:
    settings = Settings(routing={"queues": {"support": {"skills": {"support": 1}}}, "default_max_chats": 4})
    endpoint: Any = SimpleNamespace(client_credentials=None, bound_port=5060)
    return Acd(settings, endpoint, SimpleNamespace(), _Registration(), None)  # type: ignore[arg-type]


@pytest.fixture
def client(store: Store, acd: Acd, access: Access) -> TestClient:
    app = FastAPI()
    app.include_router(create_agents_router(store, acd, access, realm="callcenter", default_max_chats=4))
    return TestClient(app)


def test_add_list_change_remove(client: TestClient, store: Store, acd: Acd, users: UserService) -> None:
    body = {"name": "amy", "password": "s3cret", "display_name": "Amy A", "skills": {"support": 3},
            "languages": ["en", "zh-CN"]}
    r = client.post("/api/agents", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "amy", "display_name": "Amy A", "skills": {"support": 3},
                        "languages": ["en", "zh-cn"], "max_chats": 4, "registered": False, "state": "offline"}
    assert "s3cret" not in r.text
    assert acd.router.agents["amy"].skills["support"] == 3  # the router knows her at once

    registration: Any = acd.registration
    registration.bound.add("amy")
    acd.router.agent_event("amy", AgentEvent.LOGIN, acd.clock())
    sue = {"Authorization": f"Bearer {token_for(users, 'sue')}"}
    (listed,) = client.get("/api/agents", headers=sue).json()
    assert (listed["registered"], listed["state"]) == (True, "available")

    r = client.patch("/api/agents/amy", json={"skills": {"billing": 2}, "max_chats": 0, "password": "new"},
                     headers=ADMIN)
    assert r.status_code == 200 and r.json()["max_chats"] == 0 and r.json()["skills"] == {"billing": 2}
    live = acd.router.agents["amy"]
    assert live.max_chats == 0 and "billing" in live.skills and "support" not in live.skills
    assert live.state.value == "available"  # her state is kept
    assert ("amy", False) in registration.forgotten  # the new password is checked at once

    assert client.delete("/api/agents/amy", headers=ADMIN).status_code == 204
    assert store.get_agent("amy") is None and "amy" not in acd.router.agents
    assert ("amy", True) in registration.forgotten and not registration.bound
    assert client.delete("/api/agents/amy", headers=ADMIN).status_code == 404
    actions = [e.action for e in users.audit_log(10)]
    assert {"agent_added", "agent_changed", "agent_removed"} <= set(actions)
    assert all("new" not in str(e.detail) for e in users.audit_log(10) if e.action == "agent_changed")


def test_no_delete_while_on_a_call_or_offered_one(client: TestClient, acd: Acd) -> None:
    amy = {"name": "amy", "password": "pw", "skills": {"support": 1}}
    client.post("/api/agents", json=amy, headers=ADMIN)
    acd.router.agent_event("amy", AgentEvent.LOGIN, 0.0)
    acd.router.own_call_started("amy", "own-1", 1.0)
    r = client.delete("/api/agents/amy", headers=ADMIN)
    assert r.status_code == 409 and "amy" in acd.router.agents
    acd.router.own_call_ended("amy", "own-1", 2.0)
    acd.router.enqueue("caller-1", "support", 3.0)
    acd.router.dispatch(3.0)  # amy rings
    assert client.delete("/api/agents/amy", headers=ADMIN).status_code == 409
    acd.router.leave("caller-1", 4.0, reason="abandoned")
    assert client.delete("/api/agents/amy", headers=ADMIN).status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        {"name": "amy", "password": "pw", "skills": {"support": 6}},
        {"name": "amy", "password": "pw", "skills": {"support": 0}},
        {"name": "a b", "password": "pw"},
        {"name": "amy", "password": "pw", "max_chats": -1},
        {"name": "amy", "password": "pw", "languages": ["not a tag"]},
        {"name": "amy", "password": ""},
    ],
)
def test_bad_fields_are_422(client: TestClient, body: dict[str, Any]) -> None:
    assert client.post("/api/agents", json=body, headers=ADMIN).status_code == 422


def test_name_taken_is_409_and_patch_validates(client: TestClient) -> None:
    body = {"name": "amy", "password": "pw"}
    assert client.post("/api/agents", json=body, headers=ADMIN).status_code == 201
    assert client.post("/api/agents", json=body, headers=ADMIN).status_code == 409
    assert client.patch("/api/agents/amy", json={"skills": {"x": 9}}, headers=ADMIN).status_code == 422
    assert client.patch("/api/agents/amy", json={"max_chats": -3}, headers=ADMIN).status_code == 422
    assert client.patch("/api/agents/nobody", json={"max_chats": 1}, headers=ADMIN).status_code == 404


def test_roles(client: TestClient, users: UserService) -> None:
    agent = {"Authorization": f"Bearer {token_for(users, 'al')}"}
    sue = {"Authorization": f"Bearer {token_for(users, 'sue')}"}
    assert client.get("/api/agents").status_code == 401
    assert client.get("/api/agents", headers=agent).status_code == 403
    assert client.get("/api/agents", headers=sue).status_code == 200
    new = {"name": "amy", "password": "pw"}
    for method, path, json in [("POST", "/api/agents", new), ("PATCH", "/api/agents/amy", {}),
                               ("DELETE", "/api/agents/amy", None)]:
        assert client.request(method, path, json=json).status_code == 401
        assert client.request(method, path, json=json, headers=sue).status_code == 403
        assert client.request(method, path, json=json, headers=agent).status_code == 403
