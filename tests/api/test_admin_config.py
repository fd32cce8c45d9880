"""/api/queues/config, /api/business-hours and /api/skills: roles (401/403), provisioned (config.yaml,
read-only) versus console-made (stored, editable), validation errors naming the field, the audit log,
and that changes reach the running router, the IVR's schedules and the flow checks at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from api_helpers import ADMIN_TOKEN, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.admin_config import AdminConfig, create_admin_config_router
from callcenter.auth.service import UserService
from callcenter.core.config import BusinessHoursSettings, QueueSettings
from callcenter.core.errors import CallcenterError, ConfigError
from callcenter.routing.agents import AgentEvent
from callcenter.routing.queues import Escalation, QueueConfig
from callcenter.routing.router import Offer, Router
from callcenter.store import Store
from callcenter.store.admin_config import AdminConfigRepo

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OFFICE = {"timezone": "Europe/Berlin", "weekly": {"mon-fri": ["09:00-17:00"]}, "holidays": ["2026-12-25"]}


class Names:
    def __init__(self) -> None:
        self.queues: frozenset[str] = frozenset()
        self.schedules: frozenset[str] = frozenset()

    def __call__(self, queues: frozenset[str], schedules: frozenset[str]) -> None:
        self.queues, self.schedules = queues, schedules


class FakeAgent:
    def __init__(self, username: str, skills: dict[str, int]) -> None:
        self.username, self.skills = username, skills


@pytest.fixture
def router() -> Router:
    r = Router({"sales": QueueConfig("sales", {"sales": 1})})
    r.agents.define("al", {"sales": 1, "french": 3})
    r.agents.define("bo", {"support": 2})
    for name in ("al", "bo"):
        r.agent_event(name, AgentEvent.LOGIN, 0.0)
    return r


@pytest.fixture
def names() -> Names:
    return Names()


def make_admin(store: Store, router: Router | None, names: Names | None) -> AdminConfig:
    admin = AdminConfig(
        AdminConfigRepo(store.engine),
        queues={"sales": QueueSettings(skills={"sales": 1})},
        schedules={"main": BusinessHoursSettings(timezone="UTC", weekly={"mon-fri": ["08:00-18:00"]})},
        router=router,
        agents=lambda: [FakeAgent("al", {"sales": 1, "french": 3}), FakeAgent("bo", {"support": 2})],
        on_names=names,
    )
    admin.load()
    return admin


@pytest.fixture
def admin(store: Store, router: Router, names: Names) -> AdminConfig:
    return make_admin(store, router, names)


@pytest.fixture
def client(admin: AdminConfig, access: Access) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(create_admin_config_router(admin, access))
    with TestClient(app) as c:
        yield c


def bearer(users: UserService, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(users, name)}"}


ROUTES = [
    ("GET", "/api/queues/config", None),
    ("POST", "/api/queues/config", {"name": "x"}),
    ("PATCH", "/api/queues/config/x", {}),
    ("DELETE", "/api/queues/config/x", None),
    ("GET", "/api/business-hours", None),
    ("POST", "/api/business-hours", {"name": "x"}),
    ("PATCH", "/api/business-hours/x", {}),
    ("DELETE", "/api/business-hours/x", None),
    ("GET", "/api/skills", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_wants_credentials_and_the_right_role(
    client: TestClient, users: UserService, method: str, path: str, body: Any
) -> None:
    assert client.request(method, path, json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.request(method, path, json=body, headers=wrong).status_code == 401
    assert client.request(method, path, json=body, headers=bearer(users, "al")).status_code == 403
    supervisor = client.request(method, path, json=body, headers=bearer(users, "sue"))
    assert supervisor.status_code == (200 if method == "GET" else 403)


def test_config_queues_are_listed_read_only_and_console_queues_are_created_stored_and_live(
    client: TestClient, router: Router, names: Names, store: Store, users: UserService
) -> None:
    (sales,) = client.get("/api/queues/config", headers=ADMIN).json()
    assert sales["name"] == "sales" and sales["source"] == "config" and sales["skills"] == {"sales": 1}

    r = client.post("/api/queues/config", headers=bearer(users, "ann"),
                    json={"name": "vip", "skills": {"support": 2}, "strategy": "ring_all", "max_wait_s": 60})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "console" and r.json()["strategy"] == "ring_all"
    listed = {q["name"]: q for q in client.get("/api/queues/config", headers=ADMIN).json()}
    assert listed["vip"]["source"] == "console" and listed["vip"]["max_wait_s"] == 60
    assert "vip" in names.queues and "sales" in names.queues  # flow checks now accept the queue

    # The running router takes a caller for it at once, and offers it to the agent with the skill.
    assert router.enqueue("c1", "vip", 1.0) == 1
    assert router.dispatch(1.0) == [Offer("c1", "vip", ("bo",), 15.0)]

    # Stored: a server started again has it (and the router gets it at load).
    again = Router({"sales": QueueConfig("sales", {"sales": 1})})
    make_admin(store, again, None)
    assert again.queues["vip"].strategy == "ring_all" and again.queues["vip"].skills == {"support": 2}

    entry = users.audit_log(10, "queue_created")[0]
    assert (entry.actor, entry.target, entry.detail["strategy"]) == ("ann", "vip", "ring_all")


def test_a_name_taken_by_config_or_already_made_is_a_conflict(client: TestClient) -> None:
    assert client.post("/api/queues/config", headers=ADMIN, json={"name": "sales"}).status_code == 409
    assert client.post("/api/queues/config", headers=ADMIN, json={"name": "vip"}).status_code == 201
    assert client.post("/api/queues/config", headers=ADMIN, json={"name": "vip"}).status_code == 409
    assert client.patch("/api/queues/config/sales", headers=ADMIN, json={"max_wait_s": 5}).status_code == 409
    assert client.delete("/api/queues/config/sales", headers=ADMIN).status_code == 409
    assert client.patch("/api/queues/config/nope", headers=ADMIN, json={}).status_code == 404
    assert client.delete("/api/queues/config/nope", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "_agent"}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "q", "strategy": "random"}, "strategy"),
        ({"name": "q", "skills": {"sales": 9}}, "skills"),
        ({"name": "q", "max_wait_s": -1}, "max_wait_s"),
        ({"name": "q", "overflow": "queue:nowhere"}, "overflow"),
        ({"name": "q", "overflow": "queue:q"}, "overflow"),
        ({"name": "q", "overflow": "elsewhere"}, "overflow"),
        ({"name": "q", "colour": "red"}, "colour"),
    ],
)
def test_an_invalid_queue_is_refused_with_the_field_named(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/api/queues/config", headers=ADMIN, json=body)
    assert r.status_code == 422, r.text
    assert any(field in d["loc"] for d in r.json()["detail"]), r.json()
    assert [q["name"] for q in client.get("/api/queues/config", headers=ADMIN).json()] == ["sales"]


def test_editing_a_queue_keeps_waiting_callers_in_place_and_the_next_decision_uses_it(
    client: TestClient, router: Router
) -> None:
    body = {"name": "vip", "skills": {"french": 4}, "join_when_empty": True}
    assert client.post("/api/queues/config", headers=ADMIN, json=body).status_code == 201
    assert router.enqueue("c1", "vip", 1.0) == 1
    assert router.enqueue("c2", "vip", 2.0) == 2
    assert router.dispatch(2.0) == []  # nobody speaks French at level 4
    r = client.patch("/api/queues/config/vip", headers=ADMIN, json={"skills": {"french": 3}})
    assert r.status_code == 200 and r.json()["skills"] == {"french": 3}
    assert router.position("c1") == 1 and router.position("c2") == 2
    assert router.dispatch(3.0) == [Offer("c1", "vip", ("al",), 15.0)]  # the first caller first

    bad = client.patch("/api/queues/config/vip", headers=ADMIN, json={"ring_timeout_s": 0})
    assert bad.status_code == 422 and ["body", "ring_timeout_s"] == bad.json()["detail"][0]["loc"]
    assert router.queues["vip"].skills == {"french": 3}  # unchanged


def test_a_queue_with_callers_waiting_or_used_as_an_overflow_cannot_be_removed(
    client: TestClient, router: Router, names: Names, users: UserService
) -> None:
    client.post("/api/queues/config", headers=ADMIN, json={"name": "vip"})
    client.post("/api/queues/config", headers=ADMIN, json={"name": "gold", "overflow": "queue:vip"})
    r = client.delete("/api/queues/config/vip", headers=ADMIN)
    assert r.status_code == 409 and "gold" in r.json()["detail"]
    assert client.delete("/api/queues/config/gold", headers=ADMIN).status_code == 204

    router.enqueue("c1", "vip", 1.0)
    r = client.delete("/api/queues/config/vip", headers=ADMIN)
    assert r.status_code == 409 and "waiting" in r.json()["detail"]
    router.leave("c1", 2.0, reason="abandoned")
    assert client.delete("/api/queues/config/vip", headers=ADMIN).status_code == 204
    assert "vip" not in router.queues and "vip" not in names.queues
    assert [q["name"] for q in client.get("/api/queues/config", headers=ADMIN).json()] == ["sales"]
    assert users.audit_log(10, "queue_removed")[0].target == "vip"


def test_the_router_refuses_to_drop_a_queue_with_a_connected_call(router: Router) -> None:
    router.upsert_queue(QueueConfig("vip", {"support": 1}, wrap_up_s=5.0))
    router.enqueue("c1", "vip", 1.0)
    router.dispatch(1.0)
    router.offer_answered("c1", "bo", 2.0)
    with pytest.raises(CallcenterError, match="connected"):
        router.remove_queue("vip")
    router.call_ended("bo", 30.0)  # the wrap-up comes from the queue's settings
    assert router.agents["bo"].state.value == "wrap_up"
    router.remove_queue("vip")
    with pytest.raises(KeyError):
        router.remove_queue("vip")


def test_an_escalation_added_later_applies_to_callers_already_waiting(router: Router) -> None:
    router.upsert_queue(QueueConfig("vip", {"french": 5}, join_when_empty=True))
    assert router.enqueue("c1", "vip", 0.0) == 1
    assert router.dispatch(0.0) == []
    later = (Escalation(30.0, {"french": 1}),)
    router.upsert_queue(QueueConfig("vip", {"french": 5}, join_when_empty=True, escalations=later))
    assert router.dispatch(10.0) == []
    assert router.get_timer() == 30.0
    router.handle_timer(30.0)
    assert router.dispatch(30.0) == [Offer("c1", "vip", ("al",), 15.0)]


def test_business_hours_from_config_are_read_only_and_console_ones_reach_the_ivr(
    client: TestClient, admin: AdminConfig, names: Names, users: UserService, store: Store
) -> None:
    (main,) = client.get("/api/business-hours", headers=bearer(users, "sue")).json()
    assert main["name"] == "main" and main["source"] == "config"
    assert client.patch("/api/business-hours/main", headers=ADMIN, json={}).status_code == 409

    r = client.post("/api/business-hours", headers=ADMIN, json={"name": "office", **OFFICE})
    assert r.status_code == 201, r.text
    assert "office" in names.schedules
    schedule = admin.schedules["office"]
    assert schedule.is_open(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))  # Tuesday, 11:00 in Berlin
    assert not schedule.is_open(datetime(2026, 12, 25, 10, 0, tzinfo=UTC))  # the holiday

    r = client.patch("/api/business-hours/office", headers=ADMIN, json={"weekly": {"sat": ["10:00-12:00"]}})
    assert r.status_code == 200 and r.json()["holidays"] == ["2026-12-25"]
    assert not admin.schedules["office"].is_open(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))
    assert make_admin(store, None, None).managed_schedules["office"].weekly == {"sat": ["10:00-12:00"]}

    assert client.delete("/api/business-hours/office", headers=ADMIN).status_code == 204
    assert "office" not in admin.schedules and "office" not in names.schedules
    assert [a.action for a in users.audit_log(10, None) if a.target == "office"] == [
        "schedule_removed", "schedule_changed", "schedule_created"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "x", "timezone": "Europe"}, "timezone"),  # a folder of zones, not one
        ({"name": "x", "timezone": "Europe/" + "x" * 300}, "timezone"),  # too long for a file name
        ({"name": "x", "weekly": {"someday": ["09:00-17:00"]}}, "weekly"),
        ({"name": "x", "weekly": {"mon": ["17:00-09:00"]}}, "weekly"),
        ({"name": "x", "holidays": ["not a date"]}, "holidays"),
        ({"name": "bad name"}, "name"),
        ({"name": "x", "open": True}, "open"),
    ],
)
def test_an_invalid_schedule_is_refused_with_the_field_named(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/api/business-hours", headers=ADMIN, json=body)
    assert r.status_code == 422, r.text
    assert any(field in d["loc"] for d in r.json()["detail"]), r.json()


def test_a_broken_schedule_in_config_stops_the_start(store: Store) -> None:
    with pytest.raises(ConfigError, match="business_hours.night"):
        AdminConfig(AdminConfigRepo(store.engine), queues={},
                    schedules={"night": BusinessHoursSettings(weekly={"mon": ["25:00-26:00"]})})


def test_a_stored_name_that_config_also_has_is_skipped(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    AdminConfigRepo(store.engine).put_queue("sales", {"strategy": "ring_all"}, "ann")
    router = Router({"sales": QueueConfig("sales", {"sales": 1})})
    with caplog.at_level("WARNING"):
        admin = make_admin(store, router, None)
    assert router.queues["sales"].strategy == "longest_idle"  # config wins
    assert [q["source"] for q in admin.queues_json()] == ["config"]
    assert "admin_config.shadowed" in caplog.text


def test_skills_list_the_queues_needing_them_and_the_agents_with_their_levels(client: TestClient) -> None:
    client.post("/api/queues/config", headers=ADMIN, json={"name": "vip", "skills": {"french": 2}})
    skills = {s["skill"]: s for s in client.get("/api/skills", headers=ADMIN).json()}
    assert set(skills) == {"french", "sales", "support"}
    assert skills["french"]["queues"] == [{"name": "vip", "level": 2}]
    assert skills["french"]["agents"] == [{"name": "al", "level": 3}]
    assert skills["support"] == {"skill": "support", "queues": [], "agents": [{"name": "bo", "level": 2}]}
