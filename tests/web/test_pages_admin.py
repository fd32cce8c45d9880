"""The admin console in Chromium: an invalid flow's error is marked at its line and refused, a valid
one is diffed, published and serves the next SIPp call, and the history rolls it back."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import run_sipp, sipp_available

pytestmark = pytest.mark.e2e

NUMBER = "300"
TOKEN = "pages-test-admin-token-0123"


def flow(tag: str, on_failure: str | None = None) -> str:
    """A flow whose node ids carry `tag` (so a call's ivr_path tells the version); a menu nobody answers,
    then goodbye. `on_failure` replaces the menu's target (a missing node makes it invalid: line 12)."""
    return f"""\
id: demo
language: en-US
start: {tag}_menu
nodes:
  {tag}_menu:
    type: menu
    prompt: Version {tag}. Press 1.
    options:
      - {{dtmf: "1", next: {tag}_bye}}
    timeout_s: 1
    retries: 0
    on_failure: {on_failure or tag + "_bye"}
  {tag}_bye:
    type: hangup
    prompt: Goodbye.
"""


def api(server: ServerProcess, path: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def call_path(server: ServerProcess, workdir: Path) -> list[str]:
    """Place one SIPp call to the flow's number; the IVR path its record shows."""
    before = {c["sip_call_id"] for c in server.calls()}
    result = run_sipp(f"127.0.0.1:{server.sip_port}", workdir, scenario="uac_server_bye.xml",
                      extra=["-s", NUMBER], timeout_s=30)
    assert result.successful == 1, result.errors
    (record,) = server.new_calls(before, 1)
    return list(record["ivr_path"])


def set_source(page: Any, text: str) -> None:
    page.fill("#source", text)


def test_errors_are_shown_at_their_line_and_a_published_flow_serves_the_next_call(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    if not sipp_available():
        pytest.skip("sipp (Debian sip-tester) is not installed")
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "demo.yaml").write_text(flow("v1"))
    server = start_web(
        CALLCENTER_IVR_FLOWS_DIR=str(flows),
        CALLCENTER_IVR_NUMBERS=f"{NUMBER}=demo",
        CALLCENTER_IVR_RELOAD_INTERVAL_S=0.2,
        CALLCENTER_MEDIA_RTP_TIMEOUT_S=60,  # the SIPp caller sends no RTP
        CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN,
    )
    page = new_page(server)
    log_in(page, "ada", path="/admin?flow=demo")
    expect(page).to_have_url(re.compile(r"/admin\?flow=demo$"))
    expect(page.locator("#flow-title")).to_have_text("demo")
    expect(page.locator("#source")).to_have_value(flow("v1"))
    expect(page.locator("#history tbody tr")).to_have_count(1)

    # An unknown target on line 12: Check marks that line and lists the error with its position.
    set_source(page, flow("v2", on_failure="nowhere"))
    page.click("#check")
    expect(page.locator("#gutter .ln.err")).to_have_text(["12"])
    expect(page.locator("#highlight .line.err")).to_contain_text(["on_failure: nowhere"])
    expect(page.locator("#errors .flow-error")).to_have_count(1)
    expect(page.locator("#errors .flow-error")).to_contain_text(re.compile(r"line 12, column \d+: .*nowhere"))
    # Publishing it is refused with the same error; version 1 stays live.
    page.click("#publish")
    expect(page.locator("#status")).to_contain_text("not published")
    expect(page.locator("#gutter .ln.err")).to_have_text(["12"])
    assert api(server, "/api/flows/demo")["version"] == 1

    # The valid version: the diff shows what changes, publishing makes it v2, the next call runs it.
    set_source(page, flow("v2"))
    expect(page.locator("#gutter .ln.err")).to_have_count(0)  # edited: the old marks are gone
    page.click("#diff")
    expect(page.locator("#diff-view .del").first).to_have_text("- start: v1_menu")
    expect(page.locator("#diff-view .add").first).to_have_text("+ start: v2_menu")
    page.fill("#message", "version two")
    page.click("#publish")
    expect(page.locator("#status")).to_have_text("published v2")
    expect(page.locator("#flow-live")).to_contain_text("live: v2 by ada")
    expect(page.locator("#history tbody tr").first).to_contain_text("v2")
    expect(page.locator("#history tbody tr").first).to_contain_text("version two")
    assert call_path(server, tmp_path / "sipp2") == ["v2_menu", "v2_bye"]

    # Roll back to v1 from the history: a new version 3 equal to v1 serves the next call.
    page.locator('#history tr[data-version="1"] button.rollback').click()
    expect(page.locator("#status")).to_have_text("rolled back: v3 (= v1) is live")
    expect(page.locator("#source")).to_have_value(flow("v1"))
    assert call_path(server, tmp_path / "sipp3") == ["v1_menu", "v1_bye"]
    audit = [(e["actor"], e["action"]) for e in api(server, "/api/audit")]
    assert ("ada", "flow_published") in audit and ("ada", "flow_rolled_back") in audit


def test_a_slow_load_never_overwrites_a_flow_begun_meanwhile(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "demo.yaml").write_text(flow("v1"))
    server = start_web(CALLCENTER_IVR_FLOWS_DIR=str(flows), CALLCENTER_IVR_NUMBERS=f"{NUMBER}=demo")
    page = new_page(server)
    # Until the console has loaded its first flow it takes no input (a click on New would have
    # submitted the form natively, reloading the page; the late load would overwrite the typing).
    held: list[Any] = []
    page.route(re.compile(r"/api/flows/demo$"), lambda route: held.append(route))
    log_in(page, "ada", path="/admin?flow=demo")
    for _ in range(300):  # bounded: the page asks for it as soon as it has the flow list
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the console never asked for the first flow"
    expect(page.locator("#new-flow-id")).to_be_disabled()  # inert and aria-disabled meanwhile
    expect(page.locator("#source")).not_to_be_editable()
    held.pop().continue_()
    expect(page.locator("#source")).to_have_value(flow("v1"))
    expect(page.locator("#new-flow-id")).to_be_enabled()

    # Ready: the admin opens demo again (its answer is slow), then begins a new flow and types it.
    page.locator('#flow-list button[data-flow="demo"]').click()
    for _ in range(300):
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the console never asked for the flow"
    page.fill("#new-flow-id", "fresh")
    page.click("#new-flow button")
    mine = flow("v9", on_failure="nowhere").replace("id: demo", "id: fresh")
    set_source(page, mine)
    with page.expect_response(re.compile(r"/api/flows/demo$")):
        held[0].continue_()
    page.wait_for_load_state("networkidle")
    expect(page.locator("#flow-title")).to_have_text("fresh")
    expect(page.locator("#source")).to_have_value(mine)
    page.click("#check")
    expect(page.locator("#errors .flow-error")).to_contain_text([re.compile(r"line 12, .*nowhere")])
