"""The agent page in Chromium after a call: a ticket form the agent typed in is never lost silently.
Choosing a wrap-up code (which ends wrap-up and closes the call panel) first asks to save the ticket or
discard it; saved, the ticket is linked to the call's conversation (the page sends the call id).

The server runs in-process: the real access, pages, live, routing, calls, wrap-up and tickets routers
over a call record in SQLite and a fixed routing snapshot (sam in wrap-up after the call); ending the
wrap-up flips the snapshot as the ACD would (tests/web/test_agent_workspace.py does it with a real call)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from inprocess import InProcessServer
from playwright.sync_api import Page, expect
from sqlmodel import Session

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import Access
from callcenter.api.calls import create_calls_router
from callcenter.api.http import create_http_app
from callcenter.api.live import LiveHub, create_live_router
from callcenter.api.pages import create_pages_router
from callcenter.api.routing import create_routing_router
from callcenter.api.tickets import tickets_router
from callcenter.api.wrapup import create_wrapup_router
from callcenter.auth.service import UserService
from callcenter.events import EventBus
from callcenter.store import Store, call_public
from callcenter.store.models import CallRecord
from callcenter.tickets import TicketService

PASSWORD = "correct-horse-battery"
CALL = "ended-call@127.0.0.1"
SAID = "My parcel never arrived."
IDLE = {"reason": None, "pending": None}


class Board:
    """The ACD's routing views: sam is in wrap-up after CALL until a code ends it."""

    def __init__(self) -> None:
        self.agents = {"sam": {"state": "wrap_up", "since_s": 5.0, "call_id": CALL, **IDLE}}
        self.ended: list[str] = []

    def snapshot(self) -> dict[str, Any]:
        return {"queues": {}, "agents": self.agents}

    def set_state(self, username: str, state: str, reason: str | None = None) -> dict[str, Any]:
        raise KeyError(username)

    def end_wrap_up(self, call_id: str) -> str | None:
        self.ended.append(call_id)
        self.agents["sam"] = {"state": "available", "since_s": 0.0, "call_id": None, **IDLE}
        return "sam"


def _serve(store: Store, users: UserService, board: Board, tickets: TicketService) -> InProcessServer:
    access = Access(users)
    hub = LiveHub(EventBus(), board.snapshot)

    async def call_view(call_id: str) -> Mapping[str, Any] | None:
        record = await asyncio.to_thread(store.get_call, call_id)
        return call_public(record) if record is not None else None

    app = create_http_app(
        lambda: {"sip": "up", "db": "up"},
        routers=[
            access.router(),
            create_live_router(hub, access),
            create_routing_router(board, access),
            create_calls_router(lambda call_id: None, store, access),
            create_wrapup_router(store, access, codes=[("resolved", "Resolved")], ender=board),
            tickets_router(tickets.repo, tickets.customers, access=access, calls=call_view),
            create_pages_router(access),
        ],
    )
    return InProcessServer(app, hub)


@pytest.fixture
def board() -> Board:
    return Board()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    store = Store(f"sqlite:///{tmp_path / 'cc.db'}")
    store.create_all()
    started = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    with Session(store.engine) as session:
        session.add(CallRecord(
            sip_call_id=CALL, from_uri="sip:+4930111@example.com", to_uri="sip:300@callcenter",
            started_at=started, ended_at=started, disposition="answered",
            extra={"agent": "sam", "caller": "+4930111", "queue": "sales",
                   "transcript": [{"speaker": "caller", "text": SAID, "start": 1.0}]},
        ))  # fmt: skip
        session.commit()
    yield store
    store.close()


@pytest.fixture
def tickets(store: Store) -> Iterator[TicketService]:
    service = TicketService(store.engine)
    yield service
    service.close()


@pytest.fixture
def server(store: Store, board: Board, tickets: TicketService) -> Iterator[InProcessServer]:
    users = UserService(store.engine)
    users.add_user("sam", "agent", PASSWORD, agent="sam")
    with _serve(store, users, board, tickets) as running:
        yield running


def agent_page(browser: Any, server: InProcessServer) -> Page:
    context = browser.new_context(base_url=f"http://127.0.0.1:{server.port}")
    context.set_default_timeout(15_000)
    page: Page = context.new_page()
    page.goto("/agent")
    page.fill("#username", "sam")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url(re.compile(r"/agent$"))
    expect(page.locator("#call")).to_be_visible()
    expect(page.locator("#ticket-subject")).to_have_value(SAID)  # the draft from the transcript
    return page


def test_wrap_up_waits_for_the_edited_ticket_to_be_saved(
    browser: Any, server: InProcessServer, board: Board, tickets: TicketService
) -> None:
    page = agent_page(browser, server)
    try:
        page.fill("#ticket-description", "Resend the parcel, customer home on Friday.")
        page.click('#wrap-up-codes button[data-code="resolved"]')
        expect(page.locator("#wrap-up-warning")).to_contain_text("save the ticket or discard it")
        # nothing ended: the call, the form and what was typed are all still there
        expect(page.locator("#call")).to_be_visible()
        expect(page.locator("#ticket-description")).to_have_value(
            "Resend the parcel, customer home on Friday."
        )
        assert board.ended == []

        page.click("#ticket-save")
        expect(page.locator("#ticket-status")).to_have_text(re.compile(r"^Saved ticket #\d+$"))
        expect(page.locator("#wrap-up-warning")).to_be_hidden()
        number = int(page.locator("#ticket-status").inner_text().split("#")[1])
        detail = tickets.repo.get(number)
        assert detail.ticket.body == "Resend the parcel, customer home on Friday."
        assert [c.call_id for c, _ in detail.conversations] == [CALL]  # the page sent the call id

        page.click('#wrap-up-codes button[data-code="resolved"]')
        expect(page.locator("#no-call")).to_be_visible()
        assert board.ended == [CALL]
    finally:
        page.context.close()


def test_a_discarded_ticket_lets_wrap_up_end(
    browser: Any, server: InProcessServer, board: Board, tickets: TicketService
) -> None:
    page = agent_page(browser, server)
    try:
        page.fill("#ticket-subject", "Lost parcel")
        page.click('#wrap-up-codes button[data-code="resolved"]')
        expect(page.locator("#wrap-up-warning")).to_be_visible()
        page.click("#ticket-discard")
        expect(page.locator("#ticket-subject")).to_have_value(SAID)  # back to the draft
        expect(page.locator("#wrap-up-warning")).to_be_hidden()
        expect(page.locator("#ticket-discard")).to_be_hidden()
        page.click('#wrap-up-codes button[data-code="resolved"]')
        expect(page.locator("#wrap-up-status")).to_have_text("Wrapped up: resolved")
        expect(page.locator("#no-call")).to_be_visible()
        assert board.ended == [CALL]
        assert tickets.repo.count() == 0
    finally:
        page.context.close()
