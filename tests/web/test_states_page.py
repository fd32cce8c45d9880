"""Agent states changed from the wallboard and from the agent's workspace, in Chromium.

The board re-renders its agents on every live event; a supervisor's choice half made in a row (state
picked, reason typed) must survive that — it used to snap back to the current state, and "Set" then
sent that (seen as a test failing only on a busy machine, where a late refresh fell between picking
and clicking). The helpers are test_pages_wallboard.py's.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from test_pages_wallboard import TOKEN, agents_live, start

from callcenter.testing.server import ServerProcess

pytestmark = pytest.mark.e2e


def set_state(server: ServerProcess, agent: str, state: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/api/agents/{agent}/state", method="POST",
        data=json.dumps({"state": state}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5):
        pass


def test_states_are_changed_from_the_wallboard_and_the_agent_workspace(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    server = start(start_web, tmp_path)
    board = new_page(server)
    log_in(board, "sue")
    bob = board.locator('#agents tr[data-agent="bob"]')
    expect(bob).to_have_attribute("data-state", "offline")
    bob.locator("select").select_option("not_ready")
    bob.locator(".reason-input").fill("training")
    # Live events re-render the board meanwhile (someone changes sam's state twice): bob's row keeps
    # the choice being made, and the reason field its focus.
    sam_row = board.locator('#agents tr[data-agent="sam"]')
    for step in ("not_ready", "offline"):
        set_state(server, "sam", step)
        expect(sam_row).to_have_attribute("data-state", step)
    expect(bob.locator("select")).to_have_value("not_ready")
    expect(bob.locator(".reason-input")).to_have_value("training")
    expect(bob.locator(".reason-input")).to_be_focused()
    bob.locator("button.set-state").click()
    expect(bob).to_have_attribute("data-state", "not_ready")
    expect(bob).to_contain_text("training")
    assert agents_live(server)["bob"]["state"] == "not_ready"

    agent = new_page(server)
    log_in(agent, "sam")
    expect(agent).to_have_url(re.compile("/agent$"))
    expect(agent.locator("#my-state")).to_have_text("offline")
    expect(agent.locator("#no-call")).to_be_visible()
    agent.select_option("#reason", "lunch")
    agent.click('#state-buttons button[data-state="not_ready"]')
    expect(agent.locator("#my-state")).to_have_text("not ready")
    sam = agents_live(server)["sam"]
    assert (sam["state"], sam["reason"]) == ("not_ready", "lunch")
    # The supervisor's board follows (polling or the live channel) without a reload.
    expect(board.locator('#agents tr[data-agent="sam"]')).to_have_attribute("data-state", "not_ready")
