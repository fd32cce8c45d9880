"""GET /api/calls/{id}: supervisors see every call; an agent sees a call ringing them, one they took part
in, or was offered — never another agent's caller and transcript."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from api_helpers import add_call, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.calls import create_calls_router
from callcenter.auth.service import UserService
from callcenter.store import Store

LIVE = {
    "talking": {"sip_call_id": "talking", "live": True, "agent": "al", "transcript": [{"text": "my card"}]},
    "ringing": {"sip_call_id": "ringing", "live": True, "agent": None, "transcript": []},
}


def client_for(store: Store, access: Access) -> TestClient:
    app = FastAPI()
    rings = {"bo": "ringing"}
    app.include_router(
        create_calls_router(LIVE.get, store, access, ringing=lambda agent: rings.get(agent))
    )
    return TestClient(app)


def auth(users: UserService, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(users, name)}"}


def test_agents_see_only_their_own_calls(store: Store, access: Access, users: UserService) -> None:
    add_call(store, "ended", datetime(2026, 11, 1, 9, 0, tzinfo=UTC), agent="al", agents=["al"])
    client = client_for(store, access)
    al, bo, sue = auth(users, "al"), auth(users, "bo"), auth(users, "sue")
    got: dict[str, Any] = client.get("/api/calls/talking", headers=al).json()
    assert got["transcript"] == [{"text": "my card"}]
    assert client.get("/api/calls/talking", headers=bo).status_code == 403
    assert client.get("/api/calls/ringing", headers=bo).status_code == 200  # their screen-pop while it rings
    assert client.get("/api/calls/ringing", headers=al).status_code == 403
    assert client.get("/api/calls/ended", headers=al).status_code == 200
    assert client.get("/api/calls/ended", headers=bo).status_code == 403
    for call in ("talking", "ringing", "ended"):
        assert client.get(f"/api/calls/{call}", headers=sue).status_code == 200
    assert client.get("/api/calls/nope", headers=sue).status_code == 404
    assert client.get("/api/calls/talking").status_code == 401
