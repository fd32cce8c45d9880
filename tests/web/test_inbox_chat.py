"""The agent's chat inbox in Chromium: a web chat fed through ``engine.receive`` (a test channel adapter
collects what the engine sends) goes through a flow into a queue; the agent's inbox shows it, live; the
agent replies and the adapter receives the reply; a customer's markup is shown as text."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from inprocess import InProcessServer
from playwright.sync_api import expect

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import Access
from callcenter.api.chat import create_chat_router
from callcenter.api.http import create_http_app
from callcenter.api.live import LiveHub, create_live_router
from callcenter.api.pages import create_pages_router
from callcenter.auth.service import UserService
from callcenter.events import EventBus, install_log_bridge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chat"))
from chat_helpers import World, msg  # noqa: E402

PASSWORD = "correct-horse-battery"


class ChatServer(InProcessServer):
    """The chat API, the live channel and the pages; the engine runs on the server's loop (the test
    hands it coroutines with ``run``)."""

    def __init__(self, world: World, users: UserService) -> None:
        self.world = world
        access = Access(users)
        bus = EventBus()
        hub = LiveHub(bus)
        app = create_http_app(
            lambda: {"ok": True},
            routers=[
                access.router(),
                create_live_router(hub, access),
                create_chat_router(world.engine, access),
                create_pages_router(access),
            ],
        )
        super().__init__(app, hub, on_start=lambda: install_log_bridge(bus), on_stop=world.engine.aclose)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    world = World(tmp_path)
    users = UserService(world.store.engine)
    users.add_user("al", "agent", PASSWORD, agent="al")
    world.add_agent("al")
    with ChatServer(world, users) as running:
        yield running
    world.store.close()


def test_a_chat_reaches_the_agents_inbox_and_the_reply_reaches_the_customer(
    server: ChatServer, browser: Any
) -> None:
    context = browser.new_context(base_url=f"http://127.0.0.1:{server.port}")
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        page.goto("/agent/chats")  # no session: the login form, then back
        page.fill("#username", "al")
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_url("**/agent/chats")
        expect(page.locator("#no-chats")).to_be_visible()
        expect(page.locator("#live-status")).to_have_text("● live")

        world, channel = server.world, server.world.channel
        conv = server.run(world.engine.receive(msg("hi", "visitor-7")))
        server.run(channel.said("What can we do for you?"))
        server.run(world.engine.receive(msg("1", "visitor-7")))  # billing → queue → al
        server.run(channel.said("al has joined"))

        expect(page.locator("#chat-list li")).to_have_count(1)
        expect(page.locator("#chat-list")).to_contain_text(f"#{conv} webchat")
        expect(page.locator("#messages")).to_contain_text("Customer: hi")
        expect(page.locator("#messages")).to_contain_text("al has joined the conversation.")

        page.fill("#reply-text", "Hello, this is Al from billing.")
        page.click("#send")
        server.run(channel.said("Hello, this is Al from billing."))
        assert channel.sent[-1].sender == "al" and channel.sent[-1].conversation_id == conv

        # the customer's markup arrives live and is shown as text, never as HTML
        server.run(world.engine.receive(msg("<img src=x onerror=alert(1)><b>bold</b>", "visitor-7")))
        last = page.locator("#messages li").last
        expect(last).to_contain_text("<img src=x onerror=alert(1)><b>bold</b>")
        assert page.locator("#messages img").count() == 0 and page.locator("#messages li b").count() > 0
        assert page.locator("#messages li:last-child b").first.text_content() == "Customer: "

        page.click("#close-chat")
        server.run(channel.said("This conversation has been closed."))
        expect(page.locator("#no-chats")).to_be_visible()
    finally:
        context.close()
