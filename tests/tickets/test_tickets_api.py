"""/api/tickets, /api/customers and /api/csat through FastAPI's TestClient on both database backends:
every route without credentials (401) and by a user not admitted (403), what agents may see and do,
and the 404/409/422 answers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from ticket_clock import WallClock

from callcenter.api.access import Access
from callcenter.api.tickets import agent_queues_from_skills, tickets_router
from callcenter.auth.service import UserService
from callcenter.core.config import TicketsSettings
from callcenter.customers import CustomerRepo
from callcenter.tickets import CsatAnswer, HandledCall, TicketService

PW = "correct horse battery"
SKILLS = {"al": {"support": 2}}
QUEUES = {"support": {"support": 1}, "sales": {"sales": 1}}


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


class Api:
    def __init__(self, engine: Engine, clock: WallClock) -> None:
        self.users = UserService(engine)
        self.service = TicketService(engine, TicketsSettings(), now=clock)
        self.customers = CustomerRepo(engine)
        access = Access(self.users)
        app = FastAPI()
        app.include_router(
            tickets_router(
                self.service.repo, self.customers, access=access,
                agent_queues=agent_queues_from_skills(SKILLS.get, QUEUES),
            )
        )  # fmt: skip
        self.client = TestClient(app)
        self.tokens: dict[str, str] = {}
        for name, role, agent in (("ann", "admin", None), ("sue", "supervisor", None), ("al", "agent", "al")):
            self.users.add_user(name, role, PW, agent=agent)
            self.tokens[name] = self.users.create_api_token(name, "tests")
        self.users.add_user("newbie", "supervisor")  # a one-time password: must change it first
        self.tokens["newbie"] = self.users.create_api_token("newbie", "tests")

    def as_(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    def call(self, who: str | None, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        r = self.client.request(method, path, headers=self.as_(who), **kw)
        return r.status_code, r.json()


@pytest.fixture
def api(engine: Engine, clock: WallClock) -> Iterator[Api]:
    a = Api(engine, clock)
    yield a
    a.client.close()


ROUTES = [
    ("GET", "/api/tickets", None),
    ("GET", "/api/tickets/1", None),
    ("POST", "/api/tickets", {"subject": "x"}),
    ("PATCH", "/api/tickets/1", {"priority": "high"}),
    ("POST", "/api/tickets/1/notes", {"text": "hi"}),
    ("GET", "/api/customers", None),
    ("GET", "/api/customers/1", None),
    ("POST", "/api/customers", {"name": "Li"}),
    ("PATCH", "/api/customers/1", {"name": "Li Wei"}),
    ("GET", "/api/csat", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_credentials_and_an_admitted_user(
    api: Api, method: str, path: str, body: object
) -> None:
    api.service.repo.create("Existing", queue="support")
    api.customers.add("Existing customer", ["+4930111"])
    status, detail = api.call(None, method, path, json=body)
    assert status == 401
    status, detail = api.call("newbie", method, path, json=body)  # must change the one-time password
    assert status == 403, detail
    assert api.call("sue", method, path, json=body)[0] in (200, 201)


def test_reports_are_for_supervisors_not_agents(api: Api) -> None:
    assert api.call("al", "GET", "/api/csat")[0] == 403
    assert api.call("ann", "GET", "/api/csat")[0] == 200


def test_a_supervisor_files_changes_and_reads_a_ticket_with_its_trail(api: Api, clock: WallClock) -> None:
    status, customer = api.call(
        "sue", "POST", "/api/customers", json={"name": "Li Wei", "phones": ["+86 10 1234"]}
    )
    assert status == 201
    status, t = api.call(
        "sue", "POST", "/api/tickets",
        json={"subject": "Refund for order 55123", "priority": "high", "queue": "billing", "tags": ["refund"],
              "customer_id": customer["id"]},
    )  # fmt: skip
    assert status == 201 and t["status"] == "new" and t["sla"]["first_response_due"]
    number = t["number"]
    clock.advance(minutes=5)
    status, t = api.call(
        "sue", "PATCH", f"/api/tickets/{number}",
        json={"assignee": "al", "priority": "urgent", "add_tags": ["vip"], "remove_tags": ["refund"]},
    )  # fmt: skip
    assert status == 200
    assert (t["status"], t["assignee"], t["priority"], t["tags"]) == ("open", "al", "urgent", ["vip"])
    assert api.call("sue", "POST", f"/api/tickets/{number}/notes", json={"text": "Called back."})[0] == 201
    status, detail = api.call("sue", "GET", f"/api/tickets/{number}")
    assert status == 200
    assert detail["customer"]["phones"] == ["+86101234"]
    trail = [(e["actor"], e["field"], e["new"]) for e in detail["events"]]
    assert trail == [
        ("api:sue", "created", "new"),
        ("api:sue", "assignee", "al"),
        ("api:sue", "status", "open"),
        ("api:sue", "priority", "urgent"),
        ("api:sue", "tags", '["vip"]'),
        ("api:sue", "note", "Called back."),
    ]
    assert detail["sla"]["first_response_at"] is not None
    # Unassign with an explicit null.
    assert api.call("sue", "PATCH", f"/api/tickets/{number}", json={"assignee": None})[1]["assignee"] is None


def test_lists_filter_and_page_with_a_total(api: Api) -> None:
    repo = api.service.repo
    for i in range(5):
        repo.create(f"Support question {i}", queue="support", priority="low" if i % 2 else "normal")
    repo.create("Sales lead", queue="sales", tags=["lead"])
    status, page = api.call(
        "sue", "GET", "/api/tickets", params={"queue": "support", "limit": 2, "offset": 2}
    )
    assert status == 200 and page["total"] == 5 and len(page["items"]) == 2
    page = api.call("sue", "GET", "/api/tickets", params={"priority": ["low"]})[1]
    assert page["total"] == 2
    page = api.call("sue", "GET", "/api/tickets", params={"tag": "lead"})[1]
    assert [t["subject"] for t in page["items"]] == ["Sales lead"]
    page = api.call("sue", "GET", "/api/tickets", params={"q": "QUESTION 3"})[1]
    assert [t["subject"] for t in page["items"]] == ["Support question 3"]
    assert api.call("sue", "GET", "/api/tickets", params={"status": "bogus"})[0] == 422
    assert api.call("sue", "GET", "/api/tickets", params={"limit": 0})[0] == 422


def test_agents_see_tickets_of_their_queues_or_assigned_to_them(api: Api) -> None:
    repo = api.service.repo
    mine_by_queue = repo.create("Printer", queue="support").number
    other_queue = repo.create("Upgrade offer", queue="sales").number
    assigned = repo.create("Escalated", queue="sales").number
    repo.assign(assigned, "al", actor="api:sue")
    listed = api.call("al", "GET", "/api/tickets")[1]
    assert sorted(t["number"] for t in listed["items"]) == [mine_by_queue, assigned]
    assert api.call("al", "GET", f"/api/tickets/{other_queue}")[0] == 403
    assert api.call("al", "PATCH", f"/api/tickets/{other_queue}", json={"status": "open"})[0] == 403
    assert api.call("al", "POST", f"/api/tickets/{other_queue}/notes", json={"text": "x"})[0] == 403
    assert api.call("al", "GET", "/api/tickets/999")[0] == 404
    # Taking a ticket is fine, giving it to someone else is not.
    status, t = api.call("al", "PATCH", f"/api/tickets/{mine_by_queue}", json={"assignee": "al"})
    assert status == 200 and t["assignee"] == "al"
    assert api.call("al", "PATCH", f"/api/tickets/{mine_by_queue}", json={"assignee": "bo"})[0] == 403
    status, t = api.call("al", "POST", "/api/tickets", json={"subject": "Caller wants a callback"})
    assert status == 201 and t["assignee"] == "al"
    assert api.call("al", "POST", "/api/tickets", json={"subject": "x", "assignee": "bo"})[0] == 403
    trail = api.call("al", "GET", f"/api/tickets/{mine_by_queue}")[1]["events"]
    assert trail[-1]["actor"] == "agent:al"
    # Their customer view lists only the tickets they may see.
    cid = api.customers.add("Ida", ["+4930999"]).id
    repo.create("Hers, in sales", queue="sales", customer_id=cid)
    repo.create("Hers, in support", queue="support", customer_id=cid)
    seen = api.call("al", "GET", f"/api/customers/{cid}")[1]["tickets"]
    assert [t["subject"] for t in seen] == ["Hers, in support"]
    assert len(api.call("sue", "GET", f"/api/customers/{cid}")[1]["tickets"]) == 2
    # VIP levels are a supervisor's call.
    assert api.call("al", "PATCH", f"/api/customers/{cid}", json={"vip_level": 3})[0] == 403
    assert api.call("al", "POST", "/api/customers", json={"name": "X", "vip_level": 1})[0] == 403


def test_ticket_errors_are_404_409_and_422(api: Api) -> None:
    number = api.service.repo.create("Broken", queue="support").number
    assert api.call("sue", "GET", "/api/tickets/4242")[0] == 404
    assert api.call("sue", "PATCH", "/api/tickets/4242", json={"priority": "high"})[0] == 404
    assert api.call("sue", "POST", "/api/tickets/4242/notes", json={"text": "x"})[0] == 404
    status, detail = api.call("sue", "PATCH", f"/api/tickets/{number}", json={"status": "closed"})
    assert status == 409 and "cannot change status from new to closed" in detail["detail"]
    assert api.call("sue", "PATCH", f"/api/tickets/{number}", json={"priority": "asap"})[0] == 422
    assert api.call("sue", "PATCH", f"/api/tickets/{number}", json={"colour": "red"})[0] == 422
    assert api.call("sue", "POST", "/api/tickets", json={"subject": ""})[0] == 422
    assert api.call("sue", "POST", "/api/tickets", json={"subject": "x", "customer_id": 77})[0] == 422
    assert api.call("sue", "POST", f"/api/tickets/{number}/notes", json={"text": ""})[0] == 422


def test_customers_are_created_searched_updated_with_conflicts_and_errors(api: Api) -> None:
    status, li = api.call("sue", "POST", "/api/customers", json={"name": "Li Wei", "phones": ["+8610123456"],
                                                                 "email": "li@example.com"})  # fmt: skip
    assert status == 201
    cid = li["id"]
    api.call("sue", "POST", "/api/customers", json={"name": "Anna", "phones": ["+4930555"]})
    clash = api.call("sue", "POST", "/api/customers", json={"name": "Dup", "phones": ["+86 10 123456"]})
    assert clash[0] == 409 and f"belongs to customer {cid}" in clash[1]["detail"]
    assert api.call("sue", "POST", "/api/customers", json={"email": "not-an-email"})[0] == 422
    assert api.call("sue", "POST", "/api/customers", json={"phones": ["call me"]})[0] == 422
    found = api.call("al", "GET", "/api/customers", params={"q": "+8610123456"})[1]
    assert [c["name"] for c in found["items"]] == ["Li Wei"] and found["total"] == 1
    everyone = api.call("al", "GET", "/api/customers", params={"limit": 1})[1]
    assert everyone["total"] == 2 and len(everyone["items"]) == 1
    status, li = api.call(
        "sue", "PATCH", f"/api/customers/{cid}", json={"phones": ["+8610999"], "email": None, "vip_level": 2}
    )
    assert status == 200
    assert (li["phones"], li["email"], li["vip_level"]) == (["+8610999"], None, 2)
    assert api.call("sue", "PATCH", f"/api/customers/{cid}", json={"phones": ["+4930555"]})[0] == 409
    assert api.call("sue", "PATCH", f"/api/customers/{cid}", json={"vip_level": 12})[0] == 422
    assert api.call("sue", "PATCH", "/api/customers/999", json={"name": "x"})[0] == 404
    assert api.call("sue", "GET", "/api/customers/999")[0] == 404
    # The old number is free again.
    assert api.call("sue", "POST", "/api/customers", json={"phones": ["+8610123456"]})[0] == 201


def test_csat_averages_per_agent_and_queue(api: Api, clock: WallClock) -> None:
    for i, (agent, queue, score) in enumerate(
        [("al", "support", 5), ("al", "support", 3), ("bo", "sales", 5)]
    ):
        api.service.record_call_sync(
            HandledCall(
                call_id=f"c{i}", caller=f"+49301000{i}", started_at=clock.now - timedelta(minutes=3),
                ended_at=clock.now, disposition="answered", flow="hotline_en", queue=queue, agent=agent,
                csat=CsatAnswer(score),
            )
        )  # fmt: skip
    assert api.call("sue", "GET", "/api/csat")[1] == [
        {"agent": "bo", "count": 1, "average": 5.0, "satisfied": 1.0},
        {"agent": "al", "count": 2, "average": 4.0, "satisfied": 0.5},
    ]
    by_queue = api.call("sue", "GET", "/api/csat", params={"by": "queue"})[1]
    assert [(r["queue"], r["average"]) for r in by_queue] == [("sales", 5.0), ("support", 4.0)]
