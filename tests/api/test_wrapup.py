"""POST /api/calls/{id}/wrap-up (codes from config, stored on the record, ends the agent's wrap-up),
GET /api/calls/{id}/ticket-draft (prefilled from the transcript) and GET /api/reports/intervals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import add_call, at, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.reports import create_reports_router
from callcenter.api.wrapup import create_wrapup_router
from callcenter.auth.service import UserService
from callcenter.store import Store

CODES = [("resolved", "Resolved"), ("follow-up", "Follow-up needed")]
TRANSCRIPT = [
    {"speaker": "bot", "text": "How can I help?"},
    {"speaker": "caller", "text": "My parcel never arrived. The order number is 55123."},
    {"speaker": "agent", "text": "Let me check."},
]


class FakeEnder:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def end_wrap_up(self, call_id: str) -> str | None:
        self.ended.append(call_id)
        return "al"


@pytest.fixture
def ender() -> FakeEnder:
    return FakeEnder()


@pytest.fixture
def client(store: Store, access: Access, ender: FakeEnder) -> Iterator[TestClient]:
    live = {"live1": {"sip_call_id": "live1", "live": True, "caller": "+4930123", "agent": "al",
                      "transcript": TRANSCRIPT, "intent": "delivery_problem"}}  # fmt: skip

    def customers(caller: str) -> tuple[int, str, dict[str, Any] | None] | None:
        return (7, "Ann Smith", {"number": 12, "subject": "Late parcel"}) if caller == "+4930123" else None

    app = FastAPI()
    app.include_router(
        create_wrapup_router(
            store,
            access,
            codes=CODES,
            live=live.get,
            ender=ender,
            customers=customers,
            categories={"delivery_problem": "shipping"},
        )  # fmt: skip
    )
    app.include_router(create_reports_router(store, access, timezone="Europe/Berlin"))
    add_call(store, "c1", at("2025-05-01T09:00:00"), agent="al", agents=["al"], queue="sales")
    add_call(store, "c2", at("2025-05-01T09:10:00"), agent="bo", agents=["bo"], queue="sales")
    add_call(store, "live1", at("2025-05-01T09:20:00"), ended_at=None)
    with TestClient(app) as c:
        yield c


def bearer(users: UserService, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(users, name)}"}


def test_the_agent_picks_a_code_it_is_stored_and_wrap_up_ends(
    client: TestClient, users: UserService, store: Store, ender: FakeEnder
) -> None:
    assert client.get("/api/wrap-up-codes", headers=bearer(users, "al")).json() == [
        {"code": "resolved", "label": "Resolved"},
        {"code": "follow-up", "label": "Follow-up needed"},
    ]
    r = client.post("/api/calls/c1/wrap-up", json={"code": "follow-up", "note": " call back Monday "},
                    headers=bearer(users, "al"))  # fmt: skip
    assert r.status_code == 200 and r.json()["ended_for"] == "al"
    assert ender.ended == ["c1"]
    record = store.get_call("c1")
    assert record is not None and (record.wrap_up_code, record.wrap_up_note) == (
        "follow-up",
        "call back Monday",
    )


def test_wrap_up_is_shown_in_the_call_list(store: Store, access: Access, users: UserService) -> None:
    app = FastAPI()
    app.include_router(create_wrapup_router(store, access, codes=CODES))
    app.include_router(create_reports_router(store, access))
    add_call(store, "c9", at("2025-05-01T09:00:00"), agent="al", agents=["al"])
    with TestClient(app) as c:
        c.post("/api/calls/c9/wrap-up", json={"code": "resolved"}, headers=bearer(users, "al"))
        calls = c.get("/api/calls", headers=bearer(users, "sue")).json()
    assert [(x["sip_call_id"], x["wrap_up_code"], x["wrap_up_note"]) for x in calls] == [
        ("c9", "resolved", None)
    ]


def test_wrap_up_roles_unknown_call_and_code(
    client: TestClient, users: UserService, ender: FakeEnder
) -> None:
    body = {"code": "resolved"}
    assert client.post("/api/calls/c1/wrap-up", json=body).status_code == 401
    assert client.post("/api/calls/c2/wrap-up", json=body, headers=bearer(users, "al")).status_code == 403
    assert client.post("/api/calls/nope/wrap-up", json=body, headers=bearer(users, "sue")).status_code == 404
    bad = client.post("/api/calls/c1/wrap-up", json={"code": "lunch"}, headers=bearer(users, "al"))
    assert bad.status_code == 422 and "resolved" in bad.json()["detail"]
    assert ender.ended == []
    assert client.post("/api/calls/c2/wrap-up", json=body, headers=bearer(users, "sue")).status_code == 200
    assert client.post("/api/calls/c2/wrap-up", json=body, headers=bearer(users, "ann")).status_code == 200
    assert client.get("/api/wrap-up-codes").status_code == 401


def test_ticket_draft_from_the_live_transcript(client: TestClient, users: UserService) -> None:
    r = client.get("/api/calls/live1/ticket-draft", headers=bearer(users, "al"))
    assert r.status_code == 200
    draft = r.json()
    assert draft["subject"] == "Delivery problem: My parcel never arrived."
    assert "order number is 55123" in draft["description"] and "Order: 55123" in draft["description"]
    assert draft["category"] == "shipping"
    assert draft["customer"] == {"id": 7, "name": "Ann Smith"}
    assert draft["open_ticket"] == {"number": 12, "subject": "Late parcel"}
    assert client.get("/api/calls/live1/ticket-draft", headers=bearer(users, "bo")).status_code == 403
    assert client.get("/api/calls/live1/ticket-draft").status_code == 401
    assert client.get("/api/calls/nope/ticket-draft", headers=bearer(users, "sue")).status_code == 404


def test_intervals_of_a_local_day(client: TestClient, users: UserService, store: Store) -> None:
    # Europe/Berlin is UTC+2 in May: 21:50 UTC on April 30th is 23:50 on May 1st's eve, not May 1st.
    add_call(store, "early", at("2025-04-30T22:05:00"), queue="sales", disposition="abandoned")
    add_call(store, "eve", at("2025-04-30T21:50:00"), queue="sales")
    add_call(store, "s1", at("2025-05-01T07:05:00"), queue="sales", wait_s=5.0, talk_s=30.0)
    add_call(store, "s2", at("2025-05-01T07:20:00"), queue="sales", wait_s=50.0, talk_s=30.0)
    add_call(store, "s3", at("2025-05-01T07:40:00"), queue="support", wait_s=5.0, talk_s=30.0)
    params = {"date": "2025-05-01", "interval_min": 30, "queue": "sales"}
    r = client.get("/api/reports/intervals", params=params, headers=bearer(users, "sue"))
    assert r.status_code == 200
    body = r.json()
    slots = body["intervals"]
    assert (
        len(slots) == 48
        and slots[0]["start"] == "2025-05-01T00:00:00+02:00"
        and slots[-1]["label"] == "23:30"
    )
    by_label = {s["label"]: s for s in slots if s["offered"]}
    assert by_label == {
        "00:00": {**by_label["00:00"], "offered": 1, "answered": 0, "abandoned": 1, "service_level": 0.0},
        "09:00": {**by_label["09:00"], "offered": 2, "answered": 2, "abandoned": 0, "service_level": 0.5},
        "11:00": {**by_label["11:00"], "offered": 2, "answered": 2, "abandoned": 0, "service_level": 1.0},
    }
    assert slots[1] == {"start": "2025-05-01T00:30:00+02:00", "label": "00:30", "offered": 0, "answered": 0,
                        "abandoned": 0, "service_level": None}  # fmt: skip
    everything = client.get("/api/reports/intervals", params={"date": "2025-05-01", "interval_min": 60},
                            headers=bearer(users, "ann")).json()["intervals"]  # fmt: skip
    assert len(everything) == 24 and everything[9]["offered"] == 3  # s1, s2, s3 (c1, c2 at 11:00)


def test_intervals_roles_and_bad_input(client: TestClient, users: UserService) -> None:
    assert client.get("/api/reports/intervals").status_code == 401
    assert client.get("/api/reports/intervals", headers=bearer(users, "al")).status_code == 403
    sue = bearer(users, "sue")
    assert client.get("/api/reports/intervals", params={"interval_min": 7}, headers=sue).status_code == 422
    assert client.get("/api/reports/intervals", params={"date": "tomorrow"}, headers=sue).status_code == 422
    today = client.get("/api/reports/intervals", headers=sue).json()
    assert today["timezone"] == "Europe/Berlin" and today["interval_min"] == 30
