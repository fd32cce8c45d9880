"""The agent page in Chromium: the call's Customer panel shows who calls (as text, never HTML), their
VIP level, open tickets and earlier contacts. In-process server: the access, pages, live, routing,
calls, wrap-up and screen-pop routers over SQLite and a fixed routing snapshot (sam after a call)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from callcenter.api.screen_pop import create_screen_pop_router
from callcenter.api.wrapup import create_wrapup_router
from callcenter.auth.service import UserService
from callcenter.customers import CustomerRepo
from callcenter.events import EventBus
from callcenter.store import Store
from callcenter.store.crm import Conversation, Customer, CustomerPhone, Message, Ticket
from callcenter.store.models import CallRecord

PASSWORD = "correct-horse-battery"
CALL = "ended-call@127.0.0.1"
NAME = "Ada <img src=x onerror=alert(1)>"
T0 = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)


class Board:
    def __init__(self) -> None:
        self.agents = {
            "sam": {"state": "wrap_up", "since_s": 5.0, "call_id": CALL, "reason": None, "pending": None}
        }

    def snapshot(self) -> dict[str, Any]:
        return {"queues": {}, "agents": self.agents}

    def set_state(self, username: str, state: str, reason: str | None = None) -> dict[str, Any]:
        raise KeyError(username)


def _serve(store: Store, users: UserService) -> InProcessServer:
    access = Access(users)
    board = Board()
    hub = LiveHub(EventBus(), board.snapshot)
    app = create_http_app(
        lambda: {"sip": "up", "db": "up"},
        routers=[
            access.router(),
            create_live_router(hub, access),
            create_routing_router(board, access),
            create_calls_router(lambda call_id: None, store, access),
            create_wrapup_router(store, access, codes=[("resolved", "Resolved")]),
            create_screen_pop_router(access, store, CustomerRepo(store.engine), live=lambda call_id: None),
            create_pages_router(access),
        ],
    )
    return InProcessServer(app, hub)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessServer]:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    store = Store(f"sqlite:///{tmp_path / 'cc.db'}")
    store.create_all()
    with Session(store.engine) as s:
        s.add(CallRecord(
            sip_call_id=CALL, from_uri="sip:+4930111@example.com", to_uri="sip:300@callcenter",
            started_at=T0, ended_at=T0, disposition="answered", extra={"agent": "sam", "caller": "+4930111"},
        ))  # fmt: skip
        ada = Customer(name=NAME, vip_level=2, external_id="CRM-7")
        s.add(ada)
        s.flush()
        assert ada.id is not None
        s.add(CustomerPhone(customer_id=ada.id, number="+4930111"))
        earlier = Conversation(
            customer_id=ada.id, started_at=T0 - timedelta(days=3), queue="sales", agent="bo"
        )
        s.add(earlier)
        s.flush()
        assert earlier.id is not None
        s.add(Message(conversation_id=earlier.id, speaker="caller", text="Where is my <b>parcel</b>?", at=T0))
        s.add(Ticket(subject="Parcel lost", status="open", priority="urgent", customer_id=ada.id))
        s.add(Ticket(subject="Solved long ago", status="closed", customer_id=ada.id))
        s.commit()
    users = UserService(store.engine)
    users.add_user("sam", "agent", PASSWORD, agent="sam")
    with _serve(store, users) as running:
        yield running
    store.close()


def test_the_call_pops_the_customer_panel_as_text(browser: Any, server: InProcessServer) -> None:
    context = browser.new_context(base_url=f"http://127.0.0.1:{server.port}")
    context.set_default_timeout(15_000)
    page: Page = context.new_page()
    try:
        page.goto("/agent")
        page.fill("#username", "sam")
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_url(re.compile(r"/agent$"))
        panel = page.locator("#customer")
        expect(panel.locator(".customer-name")).to_have_text(NAME)  # shown, not parsed as markup
        assert panel.locator("img").count() == 0
        expect(panel.locator(".vip")).to_contain_text("VIP 2")
        expect(panel).to_contain_text("CRM-7")
        expect(panel.locator(".customer-tickets li")).to_have_count(1)
        expect(panel.locator(".customer-tickets")).to_contain_text("Parcel lost")
        expect(panel.locator(".customer-history q")).to_have_text("Where is my <b>parcel</b>?")
    finally:
        context.close()
