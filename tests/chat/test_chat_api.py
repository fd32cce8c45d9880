"""The agent inbox REST API: an agent sees and acts on their own chats only; supervisors on all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from chat_helpers import World, msg
from fastapi import FastAPI
from fastapi.testclient import TestClient

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import Access
from callcenter.api.chat import create_chat_router
from callcenter.auth.service import UserService
from callcenter.kb.repo import SearchHit

PW = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


class FakeSuggester:
    """The knowledge base as agent assist sees it: refunds when the customer speaks of them."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def suggest(self, text: str, language: str | None, limit: int = 3) -> list[SearchHit]:
        self.asked.append(text)
        if "refund" not in text.lower():
            return []
        hit = SearchHit(
            7, "refunds", "en", "Refunds", "Refunds take five working days.", (), "published", 9.0, 0.8
        )
        return [hit]


class Api:
    def __init__(self, world: World, client: TestClient, tokens: dict[str, str]) -> None:
        self.world, self.client, self.tokens = world, client, tokens

    def call(self, method: str, path: str, who: str | None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.request(method, path, headers=headers, **kw)

    def chat(self, text: str, visitor: str) -> int:
        conv = self.client.portal.call(self.world.engine.receive, msg(text, visitor))  # type: ignore[union-attr]
        assert conv is not None
        return int(conv)

    def wait_for(self, fragment: str) -> None:
        self.client.portal.call(self.world.channel.said, fragment)  # type: ignore[union-attr]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    world = World(tmp_path)
    world.engine.default_flow = None  # no flow: chats go straight to the "general" queue
    users = UserService(world.store.engine)
    users.add_user("sue", "supervisor", PW)
    users.add_user("al", "agent", PW, agent="al")
    users.add_user("bo", "agent", PW, agent="bo")
    users.add_user("nolink", "agent", PW)
    tokens = {name: users.create_api_token(name, "tests") for name in ("sue", "al", "bo", "nolink")}
    world.add_agent("al")
    app = FastAPI()
    app.include_router(create_chat_router(world.engine, Access(users), suggester=FakeSuggester()))
    with TestClient(app) as client:
        yield Api(world, client, tokens)
        client.portal.call(world.engine.aclose)  # type: ignore[union-attr]
    world.store.close()


def test_no_credentials_is_401(api: Api) -> None:
    assert api.call("GET", "/api/chats", None).status_code == 401
    assert api.call("POST", "/api/chats/1/messages", None, json={"text": "x"}).status_code == 401
    assert api.call("GET", "/api/chats/1", None).status_code == 401


def test_an_agent_sees_no_one_waiting_and_no_one_elses_chat(api: Api) -> None:
    # an agent user is linked to the agent of their own name: "nolink" has no chats, however many exist
    api.chat("hello", "visitor-0")
    api.wait_for("al has joined")
    assert api.call("GET", "/api/chats", "nolink").json() == []
    assert api.call("GET", "/api/chats?state=waiting", "al").json() == []


def test_an_agent_sees_and_answers_only_their_own_chats(api: Api) -> None:
    conv = api.chat("hello", "visitor-1")
    api.wait_for("al has joined")
    mine = api.call("GET", "/api/chats?state=open", "al").json()
    assert [(c["id"], c["agent"], c["state"]) for c in mine] == [(conv, "al", "open")]
    assert api.call("GET", "/api/chats", "bo").json() == []
    assert api.call("GET", f"/api/chats/{conv}", "bo").status_code == 404
    assert api.call("POST", f"/api/chats/{conv}/messages", "bo", json={"text": "hi"}).status_code == 404
    assert api.call("POST", f"/api/chats/{conv}/close", "bo").status_code == 404

    r = api.call("POST", f"/api/chats/{conv}/messages", "al", json={"text": "Hi, I am Al."})
    assert r.status_code == 201
    assert api.world.channel.sent[-1].text == "Hi, I am Al." and api.world.channel.sent[-1].sender == "al"
    detail = api.call("GET", f"/api/chats/{conv}", "al").json()
    assert [(m["speaker"], m["text"]) for m in detail["messages"]][0] == ("caller", "hello")
    assert detail["messages"][-1]["text"] == "Hi, I am Al."

    # a supervisor sees every chat
    assert [c["id"] for c in api.call("GET", "/api/chats", "sue").json()] == [conv]


def test_close_moves_the_chat_to_closed(api: Api) -> None:
    conv = api.chat("hello", "visitor-2")
    api.wait_for("al has joined")
    assert api.call("POST", f"/api/chats/{conv}/close", "al").status_code == 200
    assert api.call("GET", "/api/chats?state=open", "al").json() == []
    closed = api.call("GET", "/api/chats?state=closed", "al").json()
    assert [(c["id"], c["disposition"]) for c in closed] == [(conv, "answered")]
    assert api.call("GET", f"/api/chats/{conv}", "al").json()["state"] == "closed"
    assert api.call("POST", f"/api/chats/{conv}/messages", "al", json={"text": "x"}).status_code == 404


def test_transfer_to_another_agent_and_to_a_queue(api: Api) -> None:
    api.world.add_agent("bo")
    conv = api.chat("hello", "visitor-3")
    api.wait_for("has joined")
    holder = api.world.engine.live(conv).agent  # type: ignore[union-attr]
    other = "bo" if holder == "al" else "al"
    r = api.call("POST", f"/api/chats/{conv}/transfer", holder, json={"agent": other})
    assert r.status_code == 200 and r.json()["agent"] == other
    assert api.call("GET", "/api/chats", holder).json() == []
    assert [c["id"] for c in api.call("GET", "/api/chats", other).json()] == [conv]
    bad = api.call("POST", f"/api/chats/{conv}/transfer", other, json={"queue": "nope"})
    assert bad.status_code == 422
    both = api.call("POST", f"/api/chats/{conv}/transfer", other, json={"queue": "general", "agent": "al"})
    assert both.status_code == 422


def test_closing_the_inbox_hands_the_chats_back(api: Api) -> None:
    conv = api.chat("hello", "visitor-4")
    api.wait_for("al has joined")
    api.world.agents["al"].max_chats = 0  # so the chat cannot come straight back to al
    r = api.call("POST", "/api/chats/away", "al")
    assert r.json() == {"requeued": [conv]}
    waiting = api.call("GET", "/api/chats?state=waiting", "sue").json()
    assert [c["id"] for c in waiting] == [conv]


def test_the_inbox_page_needs_a_session(api: Api) -> None:
    r = api.client.get("/agent/chats", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/?next=/agent/chats")


def test_an_open_chat_carries_kb_suggestions_for_the_customers_latest_messages(api: Api) -> None:
    conv = api.chat("hello", "visitor-3")
    api.wait_for("al has joined")
    assert api.call("GET", f"/api/chats/{conv}", "al").json()["suggestions"] == []  # nothing to go on yet
    api.chat("I would like a refund for my order", "visitor-3")
    detail = api.call("GET", f"/api/chats/{conv}", "al").json()
    assert [(s["title"], s["snippet"]) for s in detail["suggestions"]] == [
        ("Refunds", "Refunds take five working days.")
    ]
    assert api.call("POST", f"/api/chats/{conv}/close", "al").status_code == 200
    assert "suggestions" not in api.call("GET", f"/api/chats/{conv}", "al").json()  # closed: no assist
