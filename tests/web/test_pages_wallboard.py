"""The supervisor's wallboard and the agent's workspace in Chromium while a SIPp call goes through the
IVR into a queue: the queue's waiting count and the live call (with its transcript) appear, then go
when the caller leaves; agents' states are changed from the wallboard and the workspace."""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import run_sipp, sipp_available

pytestmark = pytest.mark.e2e

TOKEN = "pages-test-admin-token-0123"
FLOW = """\
id: to_sales
language: en-US
start: hello
nodes:
  hello:
    type: say
    text: Welcome to sales.
    next: queue
  queue:
    type: queue
    queue: sales
    max_wait_s: {wait}
    next: bye
    on_overflow: bye
  bye:
    type: hangup
"""
CONFIG = """\
ivr:
  flows_dir: {flows}
  numbers: {{"300": to_sales}}
routing:
  queues:
    sales: {{skills: {{sales: 1}}, join_when_empty: true}}
    support: {{skills: {{support: 1}}}}
"""


def agents_live(server: ServerProcess) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/agents/live")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def start(start_web: Any, tmp_path: Path, wait_s: float = 30) -> ServerProcess:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "to_sales.yaml").write_text(FLOW.format(wait=wait_s))
    return start_web(
        config=CONFIG.format(flows=flows),
        agents={"bob": "support:2"},
        CALLCENTER_MEDIA_RTP_TIMEOUT_S=60,  # the SIPp caller sends no RTP
        CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN,
    )


def test_the_wallboard_shows_a_call_going_through_the_ivr_into_a_queue(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    if not sipp_available():
        pytest.skip("sipp (Debian sip-tester) is not installed")
    server = start(start_web, tmp_path, wait_s=8)
    page = new_page(server)
    log_in(page, "sue")
    expect(page).to_have_url(re.compile("/wallboard$"))
    sales = page.locator('#queues tr[data-queue="sales"]')
    expect(sales.locator(".waiting")).to_have_text("0")
    expect(page.locator("#no-calls")).to_be_visible()

    with ThreadPoolExecutor(1) as pool:
        # The caller waits in the queue (no agent is logged in) until max_wait_s, then the flow hangs up.
        caller = pool.submit(run_sipp, f"127.0.0.1:{server.sip_port}", tmp_path / "sipp",
                             scenario="uac_server_bye.xml", extra=["-s", "300"], timeout_s=40)
        expect(sales.locator(".waiting")).to_have_text("1", timeout=15_000)
        expect(sales.locator(".longest")).to_have_text(re.compile(r"^0:\d\d$"))
        row = page.locator("#calls tr.call-row")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("to_sales: hello → queue")
        expect(row).to_contain_text("sales")
        row.click()
        expect(page.locator("#call-panel")).to_be_visible()
        expect(page.locator("#call-facts")).to_contain_text("live")
        expect(page.locator("#transcript li")).to_contain_text(["Welcome to sales."])
        result = caller.result()
    assert result.successful == 1, result.errors
    # The caller left: the queue is empty again and the call is gone from the live list.
    expect(sales.locator(".waiting")).to_have_text("0")
    expect(page.locator("#calls tr.call-row")).to_have_count(0)
    expect(page.locator("#call-facts")).to_contain_text("ended")
