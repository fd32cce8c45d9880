"""/api/conversations: calls, web chats and WeChat chats in one list with filters and paging; one with
its messages; agents see only the conversations they handled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_helpers import token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from callcenter.api.access import Access
from callcenter.api.conversations import create_conversations_router
from callcenter.auth.service import UserService
from callcenter.store import Store
from callcenter.store.crm import Conversation, Customer, Message

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def seed(store: Store) -> dict[str, int]:
    ids: dict[str, int] = {}
    with Session(store.engine) as s:
        ann = Customer(name="Ann")
        s.add(ann)
        s.flush()
        rows = {
            "call": Conversation(channel="voice", call_id="c1", address="+4930111", started_at=T0,
                                 queue="billing", agent="al", customer_id=ann.id),
            "web": Conversation(channel="webchat", address="v-1", started_at=T0 + timedelta(hours=1),
                                queue="support", agent="bo"),
            "wechat": Conversation(channel="wechat", address="o-abc", started_at=T0 + timedelta(hours=2),
                                   queue="support", agent="al", customer_id=ann.id),
        }  # fmt: skip
        for key, row in rows.items():
            s.add(row)
            s.flush()
            assert row.id is not None
            ids[key] = row.id
        texts = {
            "call": ["I want a refund", "Sure"],
            "web": ["Where is my parcel 12345?"],
            "wechat": ["hello"],
        }
        for key, lines in texts.items():
            for i, text in enumerate(lines):
                speaker = "caller" if i % 2 == 0 else "agent"
                s.add(
                    Message(
                        conversation_id=ids[key], speaker=speaker, text=text, at=T0 + timedelta(seconds=i)
                    )
                )
        s.commit()
    return ids


def client_for(store: Store, access: Access) -> TestClient:
    app = FastAPI()
    app.include_router(create_conversations_router(store.engine, access))
    return TestClient(app)


def test_list_filters_pages_and_searches_across_channels(
    store: Store, access: Access, users: UserService
) -> None:
    ids = seed(store)
    client = client_for(store, access)
    sue = {"Authorization": f"Bearer {token_for(users, 'sue')}"}
    everything = client.get("/api/conversations", headers=sue).json()
    assert everything["total"] == 3
    assert [c["id"] for c in everything["items"]] == [ids["wechat"], ids["web"], ids["call"]]  # newest first
    assert everything["items"][2]["messages"] == 2 and "customer_id" in everything["items"][2]
    by_channel = client.get("/api/conversations?channel=webchat", headers=sue).json()
    assert [c["id"] for c in by_channel["items"]] == [ids["web"]]
    page = client.get("/api/conversations?limit=1&offset=1", headers=sue).json()
    assert page["total"] == 3 and [c["id"] for c in page["items"]] == [ids["web"]]
    found = client.get("/api/conversations?q=REFUND", headers=sue).json()
    assert [c["id"] for c in found["items"]] == [ids["call"]]
    customer = client.get(
        f"/api/conversations?customer_id={everything['items'][0]['customer_id']}", headers=sue
    )
    assert {c["id"] for c in customer.json()["items"]} == {ids["call"], ids["wechat"]}
    since = client.get(
        "/api/conversations", params={"since": (T0 + timedelta(minutes=30)).isoformat()}, headers=sue
    )
    assert {c["id"] for c in since.json()["items"]} == {ids["web"], ids["wechat"]}
    assert client.get("/api/conversations?q=%25", headers=sue).json()["total"] == 0  # a literal %, not "any"
    one = client.get(f"/api/conversations/{ids['call']}", headers=sue).json()
    assert [m["text"] for m in one["messages"]] == ["I want a refund", "Sure"]
    assert client.get("/api/conversations/999999", headers=sue).status_code == 404


def test_agents_see_the_conversations_they_handled_only(
    store: Store, access: Access, users: UserService
) -> None:
    ids = seed(store)
    client = client_for(store, access)
    al = {"Authorization": f"Bearer {token_for(users, 'al')}"}
    mine = client.get("/api/conversations", headers=al).json()
    assert {c["id"] for c in mine["items"]} == {ids["call"], ids["wechat"]} and mine["total"] == 2
    assert client.get(f"/api/conversations/{ids['web']}", headers=al).status_code == 403
    assert client.get(f"/api/conversations/{ids['call']}", headers=al).status_code == 200
    assert client.get("/api/conversations").status_code == 401
