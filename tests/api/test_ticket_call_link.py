"""A ticket filed with ``call_id`` (what the agent page sends) is linked to that call's conversation:
made now when the call has none yet, so the post-call path later adds the transcript to this ticket
instead of filing a second one. Agents link their own calls only."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_helpers import token_for
from fastapi import FastAPI
from fastapi.testclient import TestClient

from callcenter.api.access import Access
from callcenter.api.tickets import tickets_router
from callcenter.auth.service import UserService
from callcenter.core.config import TicketsSettings
from callcenter.store import Store
from callcenter.tickets import HandledCall, TicketService
from callcenter.tickets.service import Turn

STARTED = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
CALLS: dict[str, dict[str, Any]] = {
    "al-call": {"sip_call_id": "al-call", "live": True, "caller": "+4930111", "queue": "sales", "agent": "al",
                "started_at": STARTED.isoformat()},
    "bo-call": {"sip_call_id": "bo-call", "live": True, "caller": "+4930222", "agent": "bo"},
}  # fmt: skip


async def lookup(call_id: str) -> Mapping[str, Any] | None:
    return CALLS.get(call_id)


class Client:
    def __init__(self, store: Store, users: UserService, access: Access) -> None:
        self.service = TicketService(store.engine, TicketsSettings(from_calls="unresolved"))
        app = FastAPI()
        app.include_router(
            tickets_router(self.service.repo, self.service.customers, access=access, calls=lookup)
        )
        self.http = TestClient(app)
        self.tokens = {name: token_for(users, name) for name in ("sue", "al")}

    def post(self, who: str, body: dict[str, Any]) -> tuple[int, Any]:
        r = self.http.post("/api/tickets", json=body, headers={"Authorization": f"Bearer {self.tokens[who]}"})
        return r.status_code, r.json()

    def detail(self, number: int) -> Any:
        r = self.http.get(f"/api/tickets/{number}", headers={"Authorization": f"Bearer {self.tokens['sue']}"})
        return r.json()

    def count(self) -> int:
        return self.service.repo.count()


@pytest.fixture
def client(store: Store, users: UserService, access: Access) -> Iterator[Client]:
    c = Client(store, users, access)
    yield c
    c.http.close()
    c.service.close()


def finished(call_id: str, agent: str) -> HandledCall:
    return HandledCall(
        call_id=call_id, caller="+4930111", started_at=STARTED, ended_at=STARTED + timedelta(minutes=3),
        disposition="answered", queue="sales", agent=agent,
        transcript=(
            Turn("caller", "My router keeps dropping the line.", 2.0), Turn("agent", "Let me check.", 5.0),
        ),
    )  # fmt: skip


def test_an_agent_s_ticket_during_the_call_gets_the_call_s_transcript_afterwards(client: Client) -> None:
    status, ticket = client.post("al", {"subject": "Router drops", "call_id": "al-call"})
    assert status == 201, ticket
    detail = client.detail(ticket["number"])
    assert detail["assignee"] == "al"
    (conv,) = detail["conversations"]
    assert (conv["call_id"], conv["address"], conv["queue"], conv["agent"]) == (
        "al-call",
        "+4930111",
        "sales",
        "al",
    )
    # the call ends: the post-call path finds the ticket through the conversation, files no second one
    assert client.service.record_call_sync(finished("al-call", "al")) == ticket["number"]
    assert client.count() == 1
    (conv,) = client.detail(ticket["number"])["conversations"]
    assert [m["text"] for m in conv["messages"]] == ["My router keeps dropping the line.", "Let me check."]


def test_a_call_already_stored_keeps_its_one_conversation(client: Client) -> None:
    # an answered call files no ticket (policy "unresolved") but its conversation is stored
    assert client.service.record_call_sync(finished("al-call", "al")) is None
    status, ticket = client.post("al", {"subject": "Follow-up on the router", "call_id": "al-call"})
    assert status == 201, ticket
    (conv,) = client.detail(ticket["number"])["conversations"]
    assert conv["call_id"] == "al-call" and len(conv["messages"]) == 2
    # a second ticket for the same call would steal the link: refused, and nothing is left behind
    status, answer = client.post("sue", {"subject": "Another", "call_id": "al-call"})
    assert status == 409 and f"#{ticket['number']}" in answer["detail"]
    assert client.count() == 1


def test_agents_link_their_own_calls_only(client: Client) -> None:
    status, answer = client.post("al", {"subject": "Not mine", "call_id": "bo-call"})
    assert status == 403, answer
    status, answer = client.post("al", {"subject": "Gone", "call_id": "no-such-call"})
    assert status == 422, answer
    assert client.count() == 0
    status, ticket = client.post("sue", {"subject": "Supervisor's note on bo's call", "call_id": "bo-call"})
    assert status == 201
    (conv,) = client.detail(ticket["number"])["conversations"]
    assert conv["call_id"] == "bo-call"
