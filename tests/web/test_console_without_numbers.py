"""A server with no IVR number configured (a fresh install): every call still hears the demo tone, but
the console works — the flows API lists and publishes flows (the first one is written into the flows
folder, created for it) and the TTS preview speaks. A supervisor finds the prompts page in the nav,
and a login asked for from /admin/prompts lands there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

FIRST_FLOW = """\
id: welcome
language: en-US
start: hi
nodes:
  hi: {type: say, text: Welcome., next: bye}
  bye: {type: hangup}
"""


def test_an_admin_builds_a_first_flow_on_a_server_without_numbers(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"  # does not exist yet
    server = start_web(config=f"ivr:\n  flows_dir: {flows}\n  numbers: {{}}\n")
    page = new_page(server)
    log_in(page, "ada")
    expect(page).to_have_url(re.compile("/admin$"))

    listed = page.request.get("/api/flows")
    assert listed.status == 200 and listed.json() == []
    preview = page.request.post("/api/tts/preview", data={"text": "Hello there.", "language": "en-US"})
    assert preview.status == 200, preview.text()
    assert preview.headers["content-type"] == "audio/wav" and len(preview.body()) > 1000

    published = page.request.put("/api/flows/welcome", data=FIRST_FLOW,
                                 headers={"Content-Type": "text/plain; charset=utf-8"})  # fmt: skip
    assert published.status in (200, 201), published.text()
    assert [f["id"] for f in page.request.get("/api/flows").json()] == ["welcome"]
    assert (flows / "welcome.yaml").read_text() == FIRST_FLOW


def test_a_supervisor_has_a_prompts_link_and_a_login_for_it_lands_there(
    start_web: Any, new_page: Any, log_in: Any
) -> None:
    server = start_web()
    page = new_page(server)
    log_in(page, "sue", path="/admin/prompts")
    expect(page).to_have_url(re.compile("/admin/prompts$"))
    expect(page.locator("#nav a.current")).to_have_text("Prompts")
    page.locator("#nav a", has_text="Wallboard").click()
    expect(page).to_have_url(re.compile("/wallboard$"))
    page.locator("#nav a", has_text="Prompts").click()
    expect(page).to_have_url(re.compile("/admin/prompts$"))
