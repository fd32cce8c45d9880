"""GET /api/live over a real ASGI app (Starlette's TestClient): authentication and close codes, the
snapshot, role filtering, queue summaries, keepalive and slow clients."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from api_helpers import PW, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from callcenter.api.access import Access
from callcenter.api.live import LiveHub, create_live_router
from callcenter.auth.service import UserService
from callcenter.events import Event, EventBus, kind_of


class FakeAcd:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {
            "queues": {
                "sales": {"waiting": 0, "ringing": 0, "longest_wait_s": 0.0, "agents": {"available": 2}}
            },
            "agents": {"al": {"state": "available"}, "bo": {"state": "not_ready"}},
        }

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)


def ev(name: str, **data: Any) -> Event:
    kind = kind_of(name)
    assert kind is not None
    return Event(kind, name, datetime.now(UTC), data)


@pytest.fixture
def acd() -> FakeAcd:
    return FakeAcd()


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


def make_client(access: Access, hub: LiveHub, **kw: Any) -> TestClient:
    app = FastAPI()
    app.include_router(access.router())
    app.include_router(create_live_router(hub, access, **kw))
    return TestClient(app)


@pytest.fixture
def client(access: Access, bus: EventBus, acd: FakeAcd) -> Iterator[TestClient]:
    with make_client(access, LiveHub(bus, acd.snapshot)) as c:
        yield c


def login(client: TestClient, name: str) -> None:
    assert client.post("/api/auth/login", json={"username": name, "password": PW}).status_code == 200


def closed_with(client: TestClient, url: str, **kw: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(url, **kw) as ws:
        ws.receive_json()
    return info.value.code


def test_without_credentials_or_with_a_bad_token_the_socket_closes_4401(client: TestClient) -> None:
    assert closed_with(client, "/api/live") == 4401
    assert closed_with(client, "/api/live?token=not-a-token") == 4401
    assert closed_with(client, "/api/live", headers={"Authorization": "Bearer nope"}) == 4401


def test_a_cookie_sent_by_another_sites_page_is_refused_4403(client: TestClient) -> None:
    login(client, "sue")
    assert closed_with(client, "/api/live", headers={"Origin": "https://evil.example"}) == 4403
    with client.websocket_connect("/api/live", headers={"Origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "snapshot"


def test_a_user_who_must_change_the_one_time_password_is_refused_4403(
    client: TestClient, users: UserService
) -> None:
    users.add_user("new", "supervisor")  # a one-time password: must change it first
    assert closed_with(client, f"/api/live?token={token_for(users, 'new')}") == 4403


def test_supervisor_gets_the_snapshot_then_every_event(client: TestClient, bus: EventBus) -> None:
    login(client, "sue")
    with client.websocket_connect("/api/live") as ws:
        snap = ws.receive_json()
        assert snap["type"] == "snapshot" and set(snap["agents"]) == {"al", "bo"}
        assert snap["queues"]["sales"]["waiting"] == 0
        bus.publish(ev("flow_published", flow="main", version=3))
        bus.publish(ev("agent_state", agent="bo", state="available"))
        bus.publish(ev("tickets.created", ticket=12, call_id="c9"))
        first = ws.receive_json()
        assert first["type"] == "flow" and first["event"] == "flow_published"
        assert first["data"] == {"flow": "main", "version": 3} and first["at"].endswith("Z")
        assert ws.receive_json()["data"]["agent"] == "bo"
        assert ws.receive_json()["type"] == "ticket"


def test_an_agent_sees_themself_their_calls_and_queue_summaries_only(
    client: TestClient, bus: EventBus, users: UserService, acd: FakeAcd
) -> None:
    with client.websocket_connect(f"/api/live?token={token_for(users, 'al')}") as ws:
        snap = ws.receive_json()
        assert set(snap["agents"]) == {"al"} and "sales" in snap["queues"]
        bus.publish(ev("agent_state", agent="bo", state="available"))  # someone else: not shown
        bus.publish(ev("call_answered", call_id="other"))  # not offered to al
        bus.publish(ev("flow_published", flow="main"))  # admin business
        bus.publish(ev("agent_offered", call_id="c1", queue="sales", agents=["al", "bo"]))
        bus.publish(ev("call_held", call_id="c1"))
        bus.publish(ev("agent_state", agent="al", state="on_call", call_id="c1"))
        bus.publish(ev("call_ended", call_id="c1", disposition="answered"))
        bus.publish(ev("call_held", call_id="c1"))  # after the end: no longer theirs
        got = [
            (m["type"], m["event"], m["data"].get("call_id")) for m in (ws.receive_json() for _ in range(4))
        ]
        assert got == [
            ("agent", "agent_offered", "c1"),
            ("call", "call_held", "c1"),
            ("agent", "agent_state", "c1"),
            ("call", "call_ended", "c1"),
        ]
        # Then the queue changes. (In the server it changes on the hub's own loop; here the test thread
        # would race the hub, which reads the snapshot when it runs, so only once the events are out.)
        acd.state["queues"]["sales"]["waiting"] = 1
        bus.publish(ev("queue_joined", call_id="c2", queue="sales", position=1))  # → a summary
        summary = ws.receive_json()
        assert (summary["type"], summary["event"]) == ("queue", "queue_changed")
        assert (summary["data"]["queue"], summary["data"]["waiting"]) == ("sales", 1)


def test_queue_changed_is_sent_once_per_change_of_a_queue(
    client: TestClient, bus: EventBus, acd: FakeAcd
) -> None:
    login(client, "sue")
    with client.websocket_connect("/api/live") as ws:
        ws.receive_json()
        acd.state["queues"]["sales"].update(waiting=1, longest_wait_s=0.5)
        bus.publish(ev("queue_joined", call_id="c1", queue="sales"))
        assert ws.receive_json()["event"] == "queue_joined"
        change = ws.receive_json()
        assert change["type"] == "queue" and change["event"] == "queue_changed"
        assert change["data"] == {
            "queue": "sales",
            "waiting": 1,
            "ringing": 0,
            "agents": {"available": 2},
            "longest_wait_s": 0.5,
        }
        bus.publish(ev("agent_state", agent="bo", state="not_ready"))  # no queue change: no summary
        acd.state["queues"]["sales"]["waiting"] = 0
        bus.publish(ev("call_ended", call_id="c1", disposition="abandoned"))
        assert ws.receive_json()["event"] == "agent_state"
        assert ws.receive_json()["event"] == "call_ended"
        assert ws.receive_json()["data"]["waiting"] == 0


def test_the_client_pings_and_gets_a_pong(client: TestClient) -> None:
    login(client, "ann")
    with client.websocket_connect("/api/live") as ws:
        ws.receive_json()
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_the_server_pings_and_closes_a_client_that_never_answers(access: Access, bus: EventBus) -> None:
    with make_client(access, LiveHub(bus), ping_interval_s=0.02, idle_timeout_s=0.1) as client:
        login(client, "sue")
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/api/live") as ws:
            assert ws.receive_json()["type"] == "snapshot"
            while True:
                assert ws.receive_json() == {"type": "ping"}
        assert info.value.code == 4408


def test_a_client_answering_pings_stays_connected(access: Access, bus: EventBus) -> None:
    with make_client(access, LiveHub(bus), ping_interval_s=0.02, idle_timeout_s=0.1) as client:
        login(client, "sue")
        with client.websocket_connect("/api/live") as ws:
            ws.receive_json()
            for _ in range(15):  # 15 pings = 0.3 s, three idle timeouts
                assert ws.receive_json() == {"type": "ping"}
                ws.send_json({"type": "pong"})
            bus.publish(ev("flow_published", flow="main"))
            while (message := ws.receive_json())["type"] == "ping":
                ws.send_json({"type": "pong"})
            assert message["event"] == "flow_published"


def test_logging_out_closes_the_open_socket_4401(access: Access, bus: EventBus) -> None:
    with make_client(access, LiveHub(bus), ping_interval_s=0.02, idle_timeout_s=5.0) as client:
        login(client, "sue")
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/api/live") as ws:
            assert ws.receive_json()["type"] == "snapshot"
            assert ws.receive_json() == {"type": "ping"}  # still logged in: kept open
            assert client.post("/api/auth/logout").status_code in (200, 204)
            while True:
                assert ws.receive_json() == {"type": "ping"}
        assert info.value.code == 4401


def test_a_revoked_token_or_disabled_user_closes_the_socket_4401(
    access: Access, users: UserService, bus: EventBus
) -> None:
    with make_client(access, LiveHub(bus), ping_interval_s=0.02, idle_timeout_s=5.0) as client:
        token = token_for(users, "bo")
        with (
            pytest.raises(WebSocketDisconnect) as info,
            client.websocket_connect(f"/api/live?token={token}") as ws,
        ):
            assert ws.receive_json()["type"] == "snapshot"
            users.update_user("bo", disabled=True)
            while True:
                assert ws.receive_json() == {"type": "ping"}
        assert info.value.code == 4401


def test_a_changed_agent_link_closes_the_socket_4403_so_the_client_reconnects(
    access: Access, users: UserService, bus: EventBus
) -> None:
    with make_client(access, LiveHub(bus), ping_interval_s=0.02, idle_timeout_s=5.0) as client:
        token = token_for(users, "bo")  # (a changed role ends the user's sessions: 4401 as above)
        with (
            pytest.raises(WebSocketDisconnect) as info,
            client.websocket_connect(f"/api/live?token={token}") as ws,
        ):
            assert ws.receive_json()["type"] == "snapshot"
            users.update_user("bo", agent="al")
            while True:
                assert ws.receive_json() == {"type": "ping"}
        assert info.value.code == 4403


def test_a_client_too_slow_to_keep_up_is_closed_1013(access: Access, bus: EventBus) -> None:
    with make_client(access, LiveHub(bus, client_queue=5)) as client:
        login(client, "sue")
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/api/live") as ws:
            ws.receive_json()
            # Published from this thread while the server's loop is elsewhere: all 50 land in the
            # subscriber's queue before its writer runs, so the queue of 5 overflows.
            bus.publish_many(ev("agent_state", agent="al", state=str(i)) for i in range(50))
            while True:
                ws.receive_json()
        assert info.value.code == 1013
