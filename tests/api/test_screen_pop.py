"""The screen-pop's customer panel: the caller's customer, their recent contacts and open tickets; an
agent reads it only for a call of theirs, supervisors for any."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_helpers import add_call, token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from callcenter.api.access import Access
from callcenter.api.screen_pop import create_screen_pop_router
from callcenter.auth.service import UserService
from callcenter.customers import CustomerRepo
from callcenter.store import Store
from callcenter.store.crm import Conversation, Customer, CustomerPhone, Message, Ticket
from callcenter.store.models import CallRecord

T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
LIVE: dict[str, dict[str, Any]] = {
    "al-call": {"sip_call_id": "al-call", "live": True, "caller": "+4930111", "agent": "al"},
    "ringing-bo": {"sip_call_id": "ringing-bo", "live": True, "caller": "+4930111", "agent": None},
    "stranger": {"sip_call_id": "stranger", "live": True, "caller": "+4930999", "agent": "al"},
}
RINGING = {"bo": "ringing-bo"}


def seed(store: Store) -> None:
    with Session(store.engine) as s:
        ada = Customer(name="Ada <b>Lovelace</b>", vip_level=3, external_id="CRM-7", wechat_openid="o-ada")
        s.add(ada)
        s.flush()
        assert ada.id is not None
        s.add(CustomerPhone(customer_id=ada.id, number="+4930111"))
        for i in range(7):  # seven earlier contacts, the newest last
            conv = Conversation(
                channel="wechat" if i == 6 else "voice", customer_id=ada.id,
                started_at=T0 + timedelta(days=i), queue="support", agent="bo", disposition="answered",
            )  # fmt: skip
            s.add(conv)
            s.flush()
            assert conv.id is not None
            s.add(Message(conversation_id=conv.id, speaker="agent", text="Hello", at=conv.started_at))
            s.add(Message(conversation_id=conv.id, speaker="caller", text=f"Problem {i}",
                          at=conv.started_at + timedelta(seconds=5)))  # fmt: skip
        s.add(Ticket(subject="Router drops", status="open", priority="high", customer_id=ada.id,
                     updated_at=T0 + timedelta(days=2)))  # fmt: skip
        s.add(
            Ticket(subject="Invoice", status="pending", customer_id=ada.id, updated_at=T0 + timedelta(days=5))
        )
        s.add(Ticket(subject="Old one", status="solved", customer_id=ada.id))
        s.commit()


class Client:
    def __init__(self, store: Store, users: UserService, access: Access) -> None:
        app = FastAPI()
        router = create_screen_pop_router(
            access, store, CustomerRepo(store.engine), live=LIVE.get, ringing=lambda a: RINGING.get(a)
        )
        app.include_router(router)
        self.http = TestClient(app)
        self.tokens = {name: token_for(users, name) for name in ("sue", "al", "bo")}

    def get(self, path: str, who: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        r = self.http.get(path, headers=headers)
        return r.status_code, r.json()


@pytest.fixture
def client(store: Store, users: UserService, access: Access) -> Iterator[Client]:
    seed(store)
    c = Client(store, users, access)
    yield c
    c.http.close()


def test_the_agent_sees_the_caller_s_customer_history_and_open_tickets(client: Client) -> None:
    status, body = client.get("/api/calls/al-call/customer", "al")
    assert status == 200, body
    customer = body["customer"]
    assert customer["name"] == "Ada <b>Lovelace</b>"
    assert (customer["vip_level"], customer["external_id"], customer["wechat_openid"]) == (
        3,
        "CRM-7",
        "o-ada",
    )
    assert customer["phones"] == ["+4930111"]
    history = body["history"]
    assert [h["first_line"] for h in history] == [f"Problem {i}" for i in (6, 5, 4, 3, 2)]
    assert history[0]["channel"] == "wechat" and history[0]["queue"] == "support"
    assert history[0]["agent"] == "bo" and history[0]["disposition"] == "answered"
    tickets = body["open_tickets"]
    assert [(t["subject"], t["status"]) for t in tickets] == [
        ("Invoice", "pending"),
        ("Router drops", "open"),
    ]
    assert tickets[1]["priority"] == "high" and tickets[1]["number"] > 0


def test_a_call_ringing_the_agent_shows_the_customer_before_they_answer(client: Client) -> None:
    status, body = client.get("/api/calls/ringing-bo/customer", "bo")
    assert status == 200 and body["customer"]["name"] == "Ada <b>Lovelace</b>"


def test_an_unknown_caller_gives_no_customer(client: Client) -> None:
    status, body = client.get("/api/calls/stranger/customer", "al")
    assert status == 200
    assert body["customer"] is None and body["history"] == [] and body["open_tickets"] == []


def test_an_ended_call_on_record_is_found_by_its_from_uri(client: Client, store: Store) -> None:
    add_call(store, "old-call", T0, agent="al")
    with Session(store.engine) as s:
        record = s.exec(select(CallRecord).where(CallRecord.sip_call_id == "old-call")).one()
        record.from_uri = '"Ada" <sip:+4930111@pbx.example>;tag=x'
        s.add(record)
        s.commit()
    status, body = client.get("/api/calls/old-call/customer", "al")
    assert status == 200 and body["customer"]["vip_level"] == 3
    assert client.get("/api/calls/old-call/customer", "bo")[0] == 403


def test_another_agent_s_call_is_forbidden_but_a_supervisor_sees_any(client: Client) -> None:
    status, _ = client.get("/api/calls/al-call/customer", "bo")
    assert status == 403
    status, body = client.get("/api/calls/al-call/customer", "sue")
    assert status == 200 and body["customer"]["external_id"] == "CRM-7"


def test_no_login_is_401_and_an_unknown_call_404(client: Client) -> None:
    assert client.get("/api/calls/al-call/customer", None)[0] == 401
    assert client.get("/api/calls/nope/customer", "sue")[0] == 404
    assert client.get("/api/chats/1/customer", "sue")[0] == 404  # no chat engine here


class FakeChats:
    """The conversation engine's two reads the panel uses: a live chat and a stored one."""

    def __init__(self, store: Store) -> None:
        self.store = self
        self.engine = store.engine

    def live(self, conversation_id: int) -> Any:
        return None

    def conversation(self, conversation_id: int) -> Conversation | None:
        with Session(self.engine) as s:
            return s.get(Conversation, conversation_id)


def test_a_chat_shows_its_customer_to_its_agent_only(
    store: Store, users: UserService, access: Access
) -> None:
    seed(store)
    app = FastAPI()
    chats: Any = FakeChats(store)
    app.include_router(
        create_screen_pop_router(access, store, CustomerRepo(store.engine), live=LIVE.get, chats=chats)
    )
    with TestClient(app) as http:

        def get(who: str) -> Any:
            return http.get(
                "/api/chats/7/customer", headers={"Authorization": f"Bearer {token_for(users, who)}"}
            )

        r = get("bo")  # conversation 7 (the WeChat one) was bo's
        assert r.status_code == 200
        body = r.json()
        assert body["customer"]["wechat_openid"] == "o-ada"
        assert [h["id"] for h in body["history"]] == [6, 5, 4, 3, 2]  # the chat on screen is not history
        assert get("al").status_code == 404
