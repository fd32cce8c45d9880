"""An IVR flow whose transfer node dials a phone number, end to end.

A SIPp caller (a 1000 Hz tone) dials the flow's number; the flow's ``transfer`` node rings
``+49301234`` through the SIP trunk — a SIPp "PSTN" that demands digest auth (401 first) and answers
with a 450 Hz tone — and bridges the two. What the caller heard is the right channel of the server's
call recording; what the PSTN got is a loopback capture of the RTP sent to its media port.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_agent_calls import PSTN_HZ, TRUNK_CONFIG, Pstn  # tests/e2e is on sys.path
from test_transfers import _wav

from callcenter.testing.audio import tone_fraction
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import StartServer
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("sipp"),
    pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap (Debian tshark) is not installed"),
]

CALLER_HZ = 1000.0
TALK_S = 10
FLOW = """\
id: to_number
language: en-US
start: out
nodes:
  out:
    type: transfer
    to: "+49301234"
    timeout_s: 15
    on_failure: sorry
  sorry:
    type: hangup
    reason: transfer_failed
"""
CONFIG = """\
ivr:
  flows_dir: {flows}
  numbers: {{"400": to_number}}
"""


def test_an_ivr_transfer_node_connects_the_caller_to_a_number_through_the_trunk(
    start_server: StartServer, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "to_number.yaml").write_text(FLOW)
    pcap = tmp_path / "caller.pcap"
    t = np.arange(8000 * (TALK_S + 2)) / 8000
    write_rtp_pcap(pcap, [Segment(pcm=(6000 * np.sin(2 * np.pi * CALLER_HZ * t)).astype(np.int16))])
    pstn = Pstn(tmp_path).start()
    try:
        server = start_server(
            config=CONFIG.format(flows=flows) + TRUNK_CONFIG.format(trunk_port=pstn.sip_port),
            CALLCENTER_CALLS_RECORD=1,
        )
        result = run_sipp(
            f"127.0.0.1:{server.sip_port}", tmp_path / "caller",
            scenario=str(pcap_caller_scenario(tmp_path, pcap, number="400")),
            extra=["-d", str(TALK_S * 1000)],  # the caller hangs up TALK_S after the answer
            timeout_s=TALK_S + 20,
        )
        assert result.successful == 1 and result.failed == 0, result.errors
        assert pstn.wait(timeout=20) == 0, (pstn.work / "errors.log").read_text(errors="replace")
        (call,) = server.new_calls(set(), 1, timeout=20)
    finally:
        pstn.stop()
    server.stop()  # finalises the recording
    messages = pstn.messages()
    assert "401 Unauthorized" in messages and 'username="acme"' in messages, messages[-3000:]
    assert server.events("trunk_auth_failed") == []
    # the record says where the call went
    assert call["flow"] == "to_number" and call["ivr_path"] == ["out"]
    assert (call["disposition"], call["hangup_by"], call["agent"]) == ("answered", "caller", "+49301234")
    (visit,) = call["queue_visits"]
    assert (visit["queue"], visit["agent"], visit["disposition"]) == (
        "transfer:+49301234", "+49301234", "answered")
    assert visit["talk_s"] >= TALK_S - 3
    # audio both ways: the caller heard the PSTN, the PSTN was sent the caller's tone
    caller_heard = _wav(call["recording"])[:, 1]
    assert tone_fraction(caller_heard[-6 * 8000 :], PSTN_HZ) > 0.5
    pstn_heard = pstn.heard()
    assert len(pstn_heard) >= (TALK_S - 3) * 8000, len(pstn_heard)
    assert tone_fraction(pstn_heard[8000:], CALLER_HZ) > 0.5
