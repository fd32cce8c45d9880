"""The web chat widget in real headless Chromium: a visitor on /chat/demo chats through the flow into a
queue, the agent's /agent/chats inbox shows the conversation, the agent's reply appears in the widget,
a reload keeps the history, and a visitor's <script> is shown as text on both sides."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from inprocess import InProcessServer

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import STAFF, Access
from callcenter.api.chat import create_chat_router
from callcenter.api.http import create_http_app
from callcenter.api.live import LiveHub, create_live_router
from callcenter.api.pages import create_pages_router
from callcenter.auth.service import UserService
from callcenter.chat.webchat import WebchatGateway, create_webchat_router
from callcenter.core.config import WebchatSettings
from callcenter.events import EventBus, install_log_bridge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chat"))
from chat_helpers import World  # noqa: E402

expect = pytest.importorskip("playwright.sync_api").expect
PASSWORD = "correct-horse-battery"


class ChatSite(InProcessServer):
    """The chat API, the widget routes, the live channel and the pages on uvicorn in a thread."""

    def __init__(self, world: World, users: UserService, data: Path) -> None:
        self.world = world
        access = Access(users)
        bus = EventBus()
        hub = LiveHub(bus)
        self.gateway = WebchatGateway(WebchatSettings(), data, clock=world.clock, secret=b"k" * 40)
        self.gateway.attach(world.engine)
        app = create_http_app(
            lambda: {"ok": True},
            routers=[
                access.router(),
                create_live_router(hub, access),
                create_chat_router(world.engine, access),
                create_webchat_router(
                    self.gateway,
                    staff=access.require(*STAFF),
                    identify_staff=lambda r: access.identify(r, r.headers.get("authorization")),
                ),
                create_pages_router(access),
            ],
        )
        super().__init__(app, hub, on_start=lambda: install_log_bridge(bus), on_stop=world.engine.aclose)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatSite]:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    world = World(tmp_path)
    users = UserService(world.store.engine)
    users.add_user("al", "agent", PASSWORD, agent="al")
    world.add_agent("al")
    with ChatSite(world, users, tmp_path / "data") as running:
        yield running
    world.store.close()


def _context(browser: Any, site: ChatSite) -> Any:
    context = browser.new_context(base_url=f"http://127.0.0.1:{site.port}")
    context.set_default_timeout(15_000)
    return context


@pytest.mark.parametrize("transport", ["ws", "poll"])
def test_a_visitor_chats_with_an_agent_through_the_widget(
    site: ChatSite, browser: Any, transport: str
) -> None:
    agent_ctx, visitor_ctx = _context(browser, site), _context(browser, site)
    try:
        agent = agent_ctx.new_page()
        agent.goto("/agent/chats")
        agent.fill("#username", "al")
        agent.fill("#password", PASSWORD)
        agent.click("#login-button")
        agent.wait_for_url(re.compile(r"/agent(/chats)?$"))  # the login form may return to ?next=
        agent.goto("/agent/chats")
        expect(agent.locator("#no-chats")).to_be_visible()

        page = visitor_ctx.new_page()
        if transport == "poll":  # the long-poll fallback, as when WebSockets are blocked on the way
            page.add_init_script("window.WebSocket = undefined;")
        page.goto("/chat/demo")
        fab = page.locator("button.fab")
        expect(fab).to_have_text("Help")
        # the page's own CSS (red, 30px on every button) does not reach into the widget
        assert fab.evaluate("b => getComputedStyle(b).color") == "rgb(255, 255, 255)"
        fab.click()
        messages = page.locator("ol.messages li")
        page.locator("textarea[name=text]").fill("hello")
        page.locator("textarea[name=text]").press("Enter")
        expect(messages.filter(has_text="What can we do for you?")).to_have_count(1)
        page.locator("textarea[name=text]").fill("1")  # billing → the billing queue → al
        page.locator("form.send button[type=submit]").click()
        expect(messages.filter(has_text="al has joined the conversation.")).to_have_count(1)

        expect(agent.locator("#chat-list li")).to_have_count(1)
        expect(agent.locator("#messages")).to_contain_text("Customer: hello")
        agent.fill("#reply-text", "Hello, this is Al.")
        agent.click("#send")
        reply = messages.filter(has_text="Hello, this is Al.")
        expect(reply).to_have_count(1)
        expect(reply).to_have_class("agent")

        page.reload()
        page.locator("button.fab").click()
        expect(messages.filter(has_text="Hello, this is Al.")).to_have_count(1)  # history after a reload
        expect(messages.filter(has_text=re.compile(r"^hello$"))).to_have_count(1)

        attack = "<script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
        page.locator("textarea[name=text]").fill(attack)
        page.locator("textarea[name=text]").press("Enter")
        expect(messages.last).to_have_text(attack)
        expect(agent.locator("#messages li").last).to_contain_text(attack)
        assert page.evaluate("window.pwned") is None and agent.evaluate("window.pwned") is None
        assert page.locator("ol.messages img").count() == 0
    finally:
        agent_ctx.close()
        visitor_ctx.close()


def test_with_nobody_there_the_widget_offers_the_offline_form(site: ChatSite, browser: Any) -> None:
    site.world.agents.clear()
    tickets: list[Any] = []

    class Tickets:
        async def create(self, draft: Any) -> str:
            tickets.append(draft)
            return "42"

        async def update(self, ticket_id: str, update: Any) -> None:
            pass

    site.gateway.tickets = lambda: Tickets()
    ctx = _context(browser, site)
    try:
        page = ctx.new_page()
        page.goto("/chat/demo")
        page.locator("button.fab").click()
        expect(page.locator("form.offline")).to_be_visible()
        expect(page.locator("form.send")).to_be_hidden()
        page.locator("form.offline input[name=name]").fill("Eve")
        page.locator("form.offline input[name=email]").fill("eve@example.com")
        page.locator("form.offline textarea[name=message]").fill("Please call me back")
        page.locator("form.offline button[type=submit]").click()
        expect(page.locator("p.done")).to_contain_text("ticket 42")
        assert tickets and "eve@example.com" in tickets[0].body
    finally:
        ctx.close()
