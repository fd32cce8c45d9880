"""/api/calls/{id}/monitor: roles, which phone rings, and how the monitor's refusals read over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import PW, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.monitor import create_monitor_router
from callcenter.auth.service import UserService
from callcenter.calls.monitor import MonitorError

LIVE = {"bridged": {"sip_call_id": "bridged", "live": True, "agent": "al"},
        "in-ivr": {"sip_call_id": "in-ivr", "live": True, "agent": None}}  # fmt: skip


class FakeMonitors:
    def __init__(self) -> None:
        self.started: list[tuple[str, str, str, str]] = []
        self.active: dict[str, dict[str, Any]] = {}

    def start(self, call_id: str, mode: str, supervisor: str, phone: str) -> dict[str, Any]:
        if call_id not in LIVE or call_id == "in-ivr":
            raise KeyError(call_id)
        if call_id in self.active:
            raise MonitorError("already monitored")
        if phone == "ghost":
            raise ValueError("no agent 'ghost' to ring")
        self.started.append((call_id, mode, supervisor, phone))
        self.active[call_id] = {"call_id": call_id, "mode": mode, "phone": phone, "state": "ringing"}
        return self.active[call_id]

    def set_mode(self, call_id: str, mode: str) -> dict[str, Any]:
        self.active[call_id]["mode"] = mode
        return self.active[call_id]

    def stop(self, call_id: str) -> dict[str, Any]:
        return {**self.active.pop(call_id), "state": "ending"}

    def view(self, call_id: str) -> dict[str, Any] | None:
        return self.active.get(call_id)


@pytest.fixture
def monitors() -> FakeMonitors:
    return FakeMonitors()


@pytest.fixture
def client(users: UserService, access: Access, monitors: FakeMonitors) -> Iterator[TestClient]:
    users.add_user("sam", "supervisor", PW, agent="bo")  # a supervisor whose phone is agent bo's
    app = FastAPI()
    app.include_router(create_monitor_router(monitors, access, LIVE.get))
    with TestClient(app) as c:
        yield c


def auth(users: UserService, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(users, name)}"}


ROUTES = [("POST", "/api/calls/bridged/monitor", {"mode": "listen"}),
          ("POST", "/api/calls/bridged/monitor/mode", {"mode": "barge"}),
          ("DELETE", "/api/calls/bridged/monitor", None),
          ("GET", "/api/calls/bridged/monitor", None)]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_a_supervisor_or_admin(
    client: TestClient, users: UserService, monitors: FakeMonitors, method: str, path: str, body: Any
) -> None:
    assert client.request(method, path, json=body).status_code == 401
    assert client.request(method, path, json=body, headers=auth(users, "al")).status_code == 403
    assert not monitors.started


def test_supervisor_rings_their_own_phone_and_drives_the_modes(
    client: TestClient, users: UserService, monitors: FakeMonitors
) -> None:
    sam = auth(users, "sam")
    r = client.post("/api/calls/bridged/monitor", json={"mode": "whisper"}, headers=sam)
    assert r.status_code == 202 and r.json()["state"] == "ringing"
    assert monitors.started == [("bridged", "whisper", "sam", "bo")]
    assert client.get("/api/calls/bridged/monitor", headers=sam).json()["mode"] == "whisper"
    r = client.post("/api/calls/bridged/monitor/mode", json={"mode": "barge"}, headers=sam)
    assert r.status_code == 200 and r.json()["mode"] == "barge"
    r = client.post("/api/calls/bridged/monitor/mode", json={"mode": "loud"}, headers=sam)
    assert r.status_code == 422
    assert client.delete("/api/calls/bridged/monitor", headers=sam).json()["state"] == "ending"
    assert client.get("/api/calls/bridged/monitor", headers=sam).status_code == 404
    assert client.delete("/api/calls/bridged/monitor", headers=sam).status_code == 404
    r = client.post("/api/calls/bridged/monitor/mode", json={"mode": "listen"}, headers=sam)
    assert r.status_code == 404


def test_which_phone_rings(client: TestClient, users: UserService, monitors: FakeMonitors) -> None:
    # A supervisor cannot ring someone else's phone; one without a linked agent has none to ring.
    url = "/api/calls/bridged/monitor"
    r = client.post(url, json={"mode": "listen", "phone": "al"}, headers=auth(users, "sam"))
    assert r.status_code == 403
    r = client.post("/api/calls/bridged/monitor", json={"mode": "listen"}, headers=auth(users, "sue"))
    assert r.status_code == 422 and "phone" in r.json()["detail"]
    # An admin names the phone.
    r = client.post(url, json={"mode": "barge", "phone": "bo"}, headers=auth(users, "ann"))
    assert r.status_code == 202
    assert monitors.started == [("bridged", "barge", "ann", "bo")]


def test_refusals(client: TestClient, users: UserService) -> None:
    sam = auth(users, "sam")
    assert client.post("/api/calls/nope/monitor", json={"mode": "listen"}, headers=sam).status_code == 404
    r = client.post("/api/calls/in-ivr/monitor", json={"mode": "listen"}, headers=sam)
    assert r.status_code == 409 and "not with an agent" in r.json()["detail"]
    assert client.post("/api/calls/bridged/monitor", json={"mode": "shout"}, headers=sam).status_code == 422
    r = client.post("/api/calls/bridged/monitor", json={"phone": "ghost"}, headers=auth(users, "ann"))
    assert r.status_code == 422
    assert client.post("/api/calls/bridged/monitor", json={"mode": "listen"}, headers=sam).status_code == 202
    r = client.post("/api/calls/bridged/monitor", json={"mode": "listen"}, headers=sam)
    assert r.status_code == 409 and "already" in r.json()["detail"]


def test_without_call_control_the_routes_say_so(users: UserService, access: Access) -> None:
    app = FastAPI()
    app.include_router(create_monitor_router(None, access, LIVE.get))
    with TestClient(app) as c:
        headers = auth(users, "ann")
        r = c.post("/api/calls/bridged/monitor", json={"mode": "listen", "phone": "bo"}, headers=headers)
        assert r.status_code == 503
