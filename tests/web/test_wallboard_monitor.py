"""Listen / whisper / barge from the wallboard in Chromium: a live call with an agent shows the three
buttons (a call still in the IVR shows none); a click asks the server to ring the supervisor's phone
(POST /api/calls/{id}/monitor), the row marks the mode, later clicks switch it and Stop ends it; a
refusal (a supervisor without a linked agent has no phone to ring: 422) is shown in the row.

The server runs in-process: the real access, pages, live, routing, reports and monitor routers, over a
fixed routing snapshot and live-call list (the ACD's views) and a recording stand-in for the call
monitor (calls/monitor.py, tested with real calls in tests/e2e/test_monitor.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from inprocess import InProcessServer
from playwright.sync_api import Page, expect

import callcenter.auth.models  # noqa: F401 - registers the tables
from callcenter.api.access import Access
from callcenter.api.http import create_http_app
from callcenter.api.live import LiveHub, create_live_router
from callcenter.api.monitor import create_monitor_router
from callcenter.api.pages import create_pages_router
from callcenter.api.reports import create_reports_router
from callcenter.api.routing import create_routing_router
from callcenter.auth.service import UserService
from callcenter.calls.monitor import MonitorError
from callcenter.events import EventBus
from callcenter.store import Store

PASSWORD = "correct-horse-battery"
CALL = "call-with-al@127.0.0.1"
IN_IVR = "call-in-ivr@127.0.0.1"
LIVE: dict[str, dict[str, Any]] = {
    CALL: {"sip_call_id": CALL, "live": True, "caller": "+4930123456", "caller_name": "Ada", "called": "300",
           "flow": "to_sales", "ivr_path": ["hello", "queue"], "queue": "sales", "agent": "al"},
    IN_IVR: {"sip_call_id": IN_IVR, "live": True, "caller": "+4930999", "called": "300", "flow": "to_sales",
             "ivr_path": ["hello"], "queue": None, "agent": None},
}  # fmt: skip
IDLE = {"reason": None, "pending": None}
SNAPSHOT: dict[str, Any] = {
    "queues": {"sales": {"waiting": 0, "ringing": 0, "longest_wait_s": 0.0, "agents": {"on_call": 1},
                         "stats": {"answered": 1, "abandoned": 0}}},
    "agents": {"al": {"state": "on_call", "since_s": 12.0, "call_id": CALL, **IDLE},
               "bo": {"state": "available", "since_s": 30.0, "call_id": None, **IDLE}},
}  # fmt: skip


class RoutingBoard:
    """The ACD's views the wallboard reads (GET /api/queues, /api/agents/live, the live snapshot)."""

    def snapshot(self) -> dict[str, Any]:
        return SNAPSHOT

    def set_state(self, username: str, state: str, reason: str | None = None) -> dict[str, Any]:
        raise KeyError(username)


class RecordingMonitors:
    """Stands in for calls/monitor.py's Monitors: records what the API asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []
        self.active: dict[str, dict[str, Any]] = {}

    def start(self, call_id: str, mode: str, supervisor: str, phone: str) -> dict[str, Any]:
        if LIVE.get(call_id, {}).get("agent") is None:
            raise KeyError(call_id)
        if call_id in self.active:
            raise MonitorError("the call is monitored already")
        self.asked.append(("start", call_id, mode, supervisor, phone))
        self.active[call_id] = {"call_id": call_id, "mode": mode, "phone": phone, "state": "ringing"}
        return self.active[call_id]

    def set_mode(self, call_id: str, mode: str) -> dict[str, Any]:
        self.asked.append(("mode", call_id, mode))
        self.active[call_id]["mode"] = mode
        return self.active[call_id]

    def stop(self, call_id: str) -> dict[str, Any]:
        self.asked.append(("stop", call_id))
        return {**self.active.pop(call_id), "state": "ending"}

    def view(self, call_id: str) -> dict[str, Any] | None:
        return self.active.get(call_id)


def _serve(store: Store, users: UserService, monitors: RecordingMonitors) -> InProcessServer:
    access = Access(users)
    board = RoutingBoard()
    hub = LiveHub(EventBus(), board.snapshot)
    app = create_http_app(
        lambda: {"sip": "up", "db": "up"},
        routers=[
            access.router(),
            create_live_router(hub, access),
            create_routing_router(board, access),
            create_reports_router(store, access, sl_by_queue={"sales": 20.0}),
            create_monitor_router(monitors, access, LIVE.get),
            create_pages_router(access, live_calls=lambda: list(LIVE.values())),
        ],
    )
    return InProcessServer(app, hub)


@pytest.fixture
def monitors() -> RecordingMonitors:
    return RecordingMonitors()


@pytest.fixture
def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monitors: RecordingMonitors
) -> Iterator[InProcessServer]:
    monkeypatch.setattr(
        "callcenter.auth.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    store = Store(f"sqlite:///{tmp_path / 'cc.db'}")
    store.create_all()
    users = UserService(store.engine)
    users.add_user("sup", "supervisor", PASSWORD, agent="bo")  # rings agent bo's phone
    users.add_user("sue", "supervisor", PASSWORD)  # no linked agent: no phone to ring
    with _serve(store, users, monitors) as running:
        yield running
    store.close()


def wallboard(browser: Any, server: InProcessServer, user: str) -> Page:
    context = browser.new_context(base_url=f"http://127.0.0.1:{server.port}")
    context.set_default_timeout(15_000)
    page: Page = context.new_page()
    page.goto("/wallboard")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url(re.compile(r"/wallboard$"))
    return page


def row(page: Page, call_id: str) -> Any:
    return page.locator(f'#calls tr[data-call="{call_id}"]')


def test_listen_whisper_and_stop_from_the_wallboard(
    browser: Any, server: InProcessServer, monitors: RecordingMonitors
) -> None:
    page = wallboard(browser, server, "sup")
    try:
        call = row(page, CALL)
        expect(call).to_contain_text("Ada <+4930123456>")
        buttons = call.locator("button.monitor")
        expect(buttons).to_have_text(["Listen", "Whisper", "Barge", "Stop"])
        expect(row(page, IN_IVR).locator("button")).to_have_count(0)  # no agent on it: nothing to join
        listen, whisper = (
            call.get_by_role("button", name="Listen"),
            call.get_by_role("button", name="Whisper"),
        )
        expect(listen).to_have_attribute("aria-pressed", "false")
        idle_background = listen.evaluate("b => getComputedStyle(b).backgroundColor")

        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/monitor")) as sent:
            listen.click()
        assert sent.value.post_data_json == {"mode": "listen"}
        assert f"/api/calls/{CALL}/monitor" in sent.value.url.replace("%40", "@")
        expect(listen).to_have_attribute("aria-pressed", "true")
        expect(listen).to_have_class(re.compile(r"\bactive\b"))
        expect(whisper).to_have_attribute("aria-pressed", "false")
        assert monitors.asked == [("start", CALL, "listen", "sup", "bo")]  # the supervisor's own phone
        # the active mode stands out (style.css), not only for screen readers
        assert listen.evaluate("b => getComputedStyle(b).backgroundColor") != idle_background
        expect(call.locator(".monitor-error")).to_have_text("")

        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/monitor/mode")) as sent:
            whisper.click()
        assert sent.value.post_data_json == {"mode": "whisper"}
        expect(whisper).to_have_attribute("aria-pressed", "true")
        expect(listen).to_have_attribute("aria-pressed", "false")

        with page.expect_request(lambda r: r.method == "DELETE" and r.url.endswith("/monitor")):
            call.get_by_role("button", name="Stop").click()
        expect(call.locator('button[aria-pressed="true"]')).to_have_count(0)
        assert monitors.asked[1:] == [("mode", CALL, "whisper"), ("stop", CALL)]
        assert monitors.active == {}
    finally:
        page.context.close()


def test_a_refusal_is_shown_in_the_calls_row(
    browser: Any, server: InProcessServer, monitors: RecordingMonitors
) -> None:
    page = wallboard(browser, server, "sue")
    try:
        call = row(page, CALL)
        with page.expect_response(lambda r: r.url.endswith("/monitor")) as answered:
            call.get_by_role("button", name="Barge").click()
        assert answered.value.status == 422
        expect(call.locator(".monitor-error")).to_contain_text("no phone to ring")
        expect(call.locator('button[aria-pressed="true"]')).to_have_count(0)
        expect(row(page, IN_IVR).locator(".monitor-error")).to_have_count(0)
        assert monitors.asked == []
    finally:
        page.context.close()


def test_a_reloaded_wallboard_shows_the_monitor_the_server_reports(
    browser: Any, server: InProcessServer, monitors: RecordingMonitors, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sup whispers on the call (started from another tab, or before a reload): the live-calls view says so.
    # (one dict: the stand-in's mode changes show in the live view, as the server's do)
    running = {"call_id": CALL, "mode": "whisper", "supervisor": "sup", "phone": "bo", "state": "active"}
    monitors.active[CALL] = running
    monkeypatch.setitem(LIVE, CALL, {**LIVE[CALL], "monitor": running})
    page = wallboard(browser, server, "sup")
    other = wallboard(browser, server, "sue")
    try:
        call = row(page, CALL)
        expect(call.get_by_role("button", name="Whisper")).to_have_attribute("aria-pressed", "true")
        expect(call.get_by_role("button", name="Listen")).to_have_attribute("aria-pressed", "false")
        # another supervisor sees who is on it, with no button of theirs pressed
        theirs = row(other, CALL)
        expect(theirs.locator(".monitored-by")).to_have_text("sup: whisper")
        expect(theirs.locator('button[aria-pressed="true"]')).to_have_count(0)
        # the next click switches the running monitor's mode instead of trying to start a second one
        with page.expect_request(lambda r: r.method == "POST" and "/monitor" in r.url) as sent:
            call.get_by_role("button", name="Listen").click()
        assert sent.value.url.endswith("/monitor/mode")
        expect(call.get_by_role("button", name="Listen")).to_have_attribute("aria-pressed", "true")
        assert monitors.asked == [("mode", CALL, "listen")]
    finally:
        page.context.close()
        other.context.close()
