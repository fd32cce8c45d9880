"""IVR speech end to end: a SIPp caller dials 100 (hotline_en), stays silent through the welcome, then
says "billing" (a fixed espeak-ng take, 8 kHz μ-law in a pcap) during or after the menu prompt.
Whisper tiny.en hears it, the menu takes the billing option, and the utterance is on the call record's
transcript."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import StartServer
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]


# One espeak-ng take of "billing" (voice en, 8 kHz μ-law), kept because espeak-ng's output varies a
# little from run to run and tiny.en hears some takes as "Building." or "Feeling.": this one it hears
# as "Billing." every time (Whisper decodes a fixed input deterministically).
BILLING = Path(__file__).resolve().parent / "fixtures" / "billing_en_8k.ulaw"


def _billing() -> np.ndarray:
    return g711.decode(BILLING.read_bytes(), "PCMU").astype(np.int16)


def test_caller_says_billing_and_the_menu_routes_to_the_billing_queue(
    start_server: StartServer, tmp_path: Path
) -> None:
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(
        pcap,
        [
            Segment(pcm=np.zeros(8000 * 5, np.int16)),  # 5 s: the welcome, then well into the menu prompt
            Segment(pcm=_billing()),
            Segment(pcm=np.zeros(8000 * 2, np.int16)),  # trailing silence ends the utterance
        ],
    )
    server = start_server()
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario=str(pcap_caller_scenario(tmp_path, pcap)),
        extra=["-s", "100", "-d", "25000"],  # hang up 25 s after the answer: time to spare on a busy machine
        timeout_s=60,
    )
    assert result.successful == 1 and result.failed == 0, result.errors
    (call,) = server.new_calls(set(), 1)
    assert call["flow"] == "hotline_en"
    path = call["ivr_path"]
    assert "main_menu" in path, path
    after_menu = path[path.index("main_menu") + 1 :]
    assert after_menu[:1] == ["queue_billing"], (path, call.get("transcript"))
    assert call["queue"] == "billing"
    said = [u for u in call["transcript"] if u["speaker"] == "caller"]
    assert any("billing" in u["text"].lower() for u in said), call["transcript"]
    assert all(0 < u["confidence"] <= 1 and u["start"] >= 0 for u in said)
