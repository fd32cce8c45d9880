"""IVR end to end: a SIPp caller dials an IVR number, the flow speaks (TTS over RTP) and follows the
caller's RFC 4733 digits; the path the call took is on the call record (`calls list --json`)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import StartServer
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(pcm.astype(np.float64))))) if len(pcm) else 0.0


def test_caller_presses_1_for_sales_and_the_flow_takes_the_no_agent_path(
    start_server: StartServer, tmp_path: Path
) -> None:
    pcap = tmp_path / "caller.pcap"
    silence = np.zeros(8000 * 3 // 2, np.int16)  # 1.5 s: the welcome prompt is playing
    write_rtp_pcap(pcap, [Segment(pcm=silence), Segment(digit="1"), Segment(pcm=np.zeros(8000, np.int16))])
    server = start_server(CALLCENTER_CALLS_RECORD=1)
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario=str(pcap_caller_scenario(tmp_path, pcap)),
        extra=["-d", "9000"],  # the caller hangs up 9 s after the answer, during the next menu
        timeout_s=40,
    )
    assert result.successful == 1 and result.failed == 0, result.errors
    (call,) = server.new_calls(set(), 1)
    assert call["dtmf"] == "1"
    assert call["flow"] == "hotline_en"
    path = call["ivr_path"]
    assert path[: path.index("main_menu") + 1] == ["welcome", "business_hours", "main_menu"]
    # No agent exists yet: the queue overflows and the caller is offered voicemail.
    assert path[path.index("main_menu") + 1 :][:2] == ["queue_sales", "offer_voicemail"], path
    assert call["queue"] == "sales"
    assert call["ivr_outcome"] == "caller_hangup" and call["hangup_by"] == "caller"

    server.stop()  # finalises the recording
    with wave.open(call["recording"]) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = frames[:, 0], frames[:, 1]
    assert len(frames) > 5 * 8000
    # The caller heard speech on the right channel (the prompts), well above the silent caller's left.
    assert _rms(right[: 2 * 8000]) > 300
    assert _rms(right[: 2 * 8000]) > 20 * max(_rms(left[:8000]), 1.0)


QUICK_FLOW = """\
id: quick_menu
language: en-US
start: menu
nodes:
  menu:
    type: menu
    prompt: Press 1.
    options:
      - {dtmf: "1", next: thanks}
    timeout_s: 1
    retries: 1
    no_input: Sorry, I did not hear anything.
    on_failure: goodbye
  thanks:
    type: hangup
    prompt: Thanks.
  goodbye:
    type: hangup
    prompt: Goodbye.
    reason: menu_failed
"""


def test_caller_who_presses_nothing_hears_the_retries_then_goodbye_and_the_server_hangs_up(
    start_server: StartServer, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "quick_menu.yaml").write_text(QUICK_FLOW)
    server = start_server(
        CALLCENTER_IVR_FLOWS_DIR=str(flows),
        CALLCENTER_IVR_NUMBERS="100=quick_menu",
        CALLCENTER_MEDIA_RTP_TIMEOUT_S=60,  # this caller sends no RTP at all
    )
    # uac_server_bye.xml only succeeds when the server's BYE arrives.
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario="uac_server_bye.xml",
        extra=["-s", "100"],
        timeout_s=40,
    )
    assert result.successful == 1 and result.failed == 0, result.errors
    (call,) = server.new_calls(set(), 1)
    assert call["flow"] == "quick_menu"
    assert call["ivr_path"] == ["menu", "goodbye"]
    assert call["ivr_outcome"] == "hangup" and call["ivr_reason"] == "menu_failed"
    assert (call["disposition"], call["hangup_by"]) == ("answered", "server")


def test_an_invalid_flow_stops_start_up_with_its_position(start_server: StartServer, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "broken.yaml").write_text(
        QUICK_FLOW.replace("id: quick_menu", "id: broken").replace("next: thanks", "next: nowhere")
    )
    with pytest.raises(RuntimeError) as err:
        start_server(CALLCENTER_IVR_FLOWS_DIR=str(flows), CALLCENTER_IVR_NUMBERS="100=broken")
    assert "broken.yaml:" in str(err.value) and "nowhere" in str(err.value)
