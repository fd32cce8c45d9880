"""The agent's workspace in Chromium during a real call: a SIPp caller speaks (a recorded sentence) in
the sales queue, sam's softphone (baresip, auto-answer) takes it; the page's ticket form fills from the
live transcript, saving it makes a ticket; after the call the wrap-up codes appear and choosing one
stores it on the call record and ends sam's wrap-up."""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect

from callcenter.media import g711
from callcenter.testing.baresip import Baresip, baresip_available, write_wav
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import ServerProcess
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp, sipp_available

pytestmark = pytest.mark.e2e

TOKEN = "workspace-test-admin-token-0123"
CORPUS = Path(__file__).resolve().parents[1] / "speech" / "corpus" / "audio"
FLOW = """\
id: to_sales
language: en-US
start: queue
nodes:
  queue:
    type: queue
    queue: sales
    max_wait_s: 40
    next: bye
    on_overflow: bye
  bye:
    type: hangup
"""
# A long wrap-up: sam stays in it until a code is chosen on the page.
CONFIG = """\
ivr:
  flows_dir: {flows}
  numbers: {{"300": to_sales}}
routing:
  queues:
    sales: {{skills: {{sales: 1}}, wrap_up_s: 300}}
"""


def api(server: ServerProcess, path: str) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def caller_audio() -> np.ndarray:
    """Silence, "There is currently one other participant in the conference." (a human recording),
    silence: the sentence ends well before the caller hangs up, so Whisper has it while the call is up."""
    voice = g711.decode((CORPUS / "asterisk_conf-onlyone.ulaw").read_bytes(), "PCMU").astype(np.int16)
    return np.concatenate([np.zeros(8000 * 3, np.int16), voice, np.zeros(8000 * 14, np.int16)])


def test_the_ticket_form_follows_the_call_and_a_wrap_up_code_ends_wrap_up(
    start_web: Any, new_page: Any, log_in: Any, tmp_path: Path
) -> None:
    if not sipp_available() or not baresip_available():
        pytest.skip("sipp (sip-tester) and baresip are needed for a real call")
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "to_sales.yaml").write_text(FLOW)
    server = start_web(config=CONFIG.format(flows=flows), CALLCENTER_HTTP_ADMIN_TOKEN=TOKEN)

    page = new_page(server)
    log_in(page, "sam")
    expect(page).to_have_url(re.compile("/agent$"))
    expect(page.locator("#no-call")).to_be_visible()

    work = tmp_path / "sam"
    work.mkdir()
    account = f"<sip:sam@127.0.0.1:{server.sip_port}>;auth_pass=sip-secret-1;answermode=auto;regint=600"
    phone = Baresip(work, account, audio_wav=write_wav(work / "mic.wav", 90), life_s=120)
    phone.start()
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, [Segment(pcm=caller_audio())])
    try:
        server.wait_for_event("agent_registered", username="sam", timeout=15)
        expect(page.locator("#my-state")).to_have_text("available")
        with ThreadPoolExecutor(1) as pool:
            caller = pool.submit(run_sipp, f"127.0.0.1:{server.sip_port}", tmp_path / "sipp",
                                 scenario=str(pcap_caller_scenario(tmp_path, pcap, number="300")),
                                 extra=["-d", "16000"], timeout_s=60)  # fmt: skip
            expect(page.locator("#call")).to_be_visible(timeout=20_000)
            expect(page.locator("#my-state")).to_have_text("on call")
            expect(page.locator("#ticket-customer")).to_have_text("New caller (no customer yet)")
            # The form popped before anyone spoke; it follows the transcript as it comes.
            said = re.compile("participant|conference", re.I)
            expect(page.locator("#ticket-subject")).to_have_value(said, timeout=30_000)
            expect(page.locator("#ticket-description")).to_have_value(said)
            expect(page.locator("#wrap-up")).to_be_hidden()  # not while the call is up
            page.fill("#ticket-category", "conferencing")
            page.click("#ticket-save")
            expect(page.locator("#ticket-status")).to_have_text(re.compile(r"^Saved ticket #\d+$"))
            number = int(page.locator("#ticket-status").inner_text().split("#")[1])
            result = caller.result()
        assert result.successful == 1, result.errors
        ticket = api(server, f"/api/tickets/{number}")
        assert re.search("participant|conference", ticket["subject"], re.I), ticket
        assert ticket["category"] == "conferencing"

        # The caller hung up: sam is in wrap-up, the codes are offered, the category typed stays.
        expect(page.locator("#my-state")).to_have_text("wrap up")
        expect(page.locator("#call-facts")).to_contain_text("ended")
        codes = page.locator("#wrap-up-codes button")
        expect(codes).to_have_text(["Resolved", "Follow-up needed", "Escalated", "Wrong number"])
        expect(page.locator("#ticket-category")).to_have_value("conferencing")
        call_id = api(server, "/api/agents/live")["sam"]["call_id"]
        page.fill("#wrap-up-note", "sent the dial-in details")
        page.click('#wrap-up-codes button[data-code="follow-up"]')
        # (generous timeouts: on a loaded 2-core machine Whisper may still be busy with the call)
        expect(page.locator("#wrap-up-status")).to_have_text("Wrapped up: follow-up", timeout=15_000)
        expect(page.locator("#my-state")).to_have_text("available", timeout=15_000)
        expect(page.locator("#no-call")).to_be_visible()
        assert api(server, "/api/agents/live")["sam"]["state"] == "available"
    finally:
        phone.stop()
    # the ticket saved during the call holds the call's conversation (the page sent the call id)
    linked = api(server, f"/api/tickets/{number}")["conversations"]
    assert [c["call_id"] for c in linked] == [call_id], linked
    (record,) = [c for c in api(server, "/api/calls") if c["sip_call_id"] == call_id]
    assert (record["agent"], record["wrap_up_code"], record["wrap_up_note"]) == (
        "sam",
        "follow-up",
        "sent the dial-in details",
    )
