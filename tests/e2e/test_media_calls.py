"""Media end to end: a SIPp caller streams speech and RFC 4733 digits from a pcap; the server hears
the digits, records both directions, and the recording holds the caller's audio on the left channel
and the server's tone on the right."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.media.dtmf_inband import dtmf_tone
from callcenter.testing.audio import best_correlation, tone_fraction
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import StartServer
from callcenter.testing.sipp import pcap_caller_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

SPEECH = Path(__file__).resolve().parents[1] / "media" / "fixtures" / "speech_8k.ulaw"


def _speech(seconds: float) -> np.ndarray:
    pcm = g711.decode(SPEECH.read_bytes(), "PCMU").astype(np.int16)
    return pcm[: int(seconds * 8000)]


def test_caller_speech_and_digits_reach_the_server_and_the_recording(
    start_server: StartServer, tmp_path: Path
) -> None:
    speech = _speech(2.0)
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(
        pcap,
        [
            Segment(pcm=speech),
            Segment(digit="5"),
            Segment(pcm=np.zeros(2400, np.int16)),
            Segment(digit="#"),
            Segment(pcm=np.zeros(1600, np.int16)),
        ],
    )
    server = start_server(
        CALLCENTER_CALLS_RECORD=1, CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=0, CALLCENTER_IVR_NUMBERS=""
    )  # no flow on 100: the demo tone
    scenario = pcap_caller_scenario(tmp_path, pcap)
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario=str(scenario),
        extra=["-d", "4000"],
        timeout_s=30,
    )
    assert result.successful == 1 and result.failed == 0, result.errors
    (call,) = server.new_calls(set(), 1)
    assert call["disposition"] == "answered" and call["hangup_by"] == "caller"
    assert call["dtmf"] == "5#"  # each RFC 4733 event once, although its end came three times
    assert call["rtp"]["packets_received"] > 100 and call["rtp"]["packets_lost"] == 0

    server.stop()  # the recording is finalised by the time the server has exited
    recording = Path(call["recording"])
    with wave.open(str(recording)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = frames[:, 0], frames[:, 1]
    assert len(frames) >= 3 * 8000
    # The caller's speech is on the left channel (G.711 twice, so not sample-exact)...
    assert best_correlation(left, speech[:8000]) > 0.8
    # ...and what the server sent (the 440 Hz demo tone) on the right.
    assert tone_fraction(right[8000:16000], 440) > 0.8


def test_in_band_digits_are_heard_when_no_telephone_event_is_negotiated(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A line without RFC 4733 (the offer has no telephone-event): the digits are tones in the audio,
    between stretches of speech that must not be taken for digits."""
    speech = _speech(1.5)
    gap = np.zeros(800, np.int16)
    segments = [Segment(pcm=speech)]
    for digit in "7*0":
        segments += [Segment(pcm=dtmf_tone(digit, 0.12)), Segment(pcm=gap)]
    segments.append(Segment(pcm=speech))
    pcap = tmp_path / "inband.pcap"
    write_rtp_pcap(pcap, segments)
    server = start_server(
        CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=0, CALLCENTER_IVR_NUMBERS=""
    )  # no flow on 100: the demo tone
    scenario = pcap_caller_scenario(tmp_path, pcap, telephone_event=False)
    result = run_sipp(
        f"127.0.0.1:{server.sip_port}",
        tmp_path / "sipp",
        scenario=str(scenario),
        extra=["-d", "5000"],
        timeout_s=30,
    )
    assert result.successful == 1 and result.failed == 0, result.errors
    (call,) = server.new_calls(set(), 1)
    assert call["dtmf"] == "7*0"
