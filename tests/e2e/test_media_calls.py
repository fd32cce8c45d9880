"""Media end to end: a SIPp caller streams speech and RFC 4733 digits from a pcap; the server hears
the digits, records both directions, and the recording holds the caller's audio on the left channel
and the server's tone on the right."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.testing.pcap import Segment, write_rtp_pcap
from callcenter.testing.server import StartServer
from callcenter.testing.sipp import render_scenario, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

SPEECH = Path(__file__).resolve().parents[1] / "media" / "fixtures" / "speech_8k.ulaw"


def _speech(seconds: float) -> np.ndarray:
    pcm = g711.decode(SPEECH.read_bytes(), "PCMU").astype(np.int16)
    return pcm[: int(seconds * 8000)]


def _best_correlation(recorded: np.ndarray, sent: np.ndarray) -> float:
    """Peak normalised cross-correlation of `sent` against `recorded` over every lag."""
    rec = recorded.astype(np.float64)
    ref = sent.astype(np.float64)
    n = len(rec) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    best_lag = int(np.argmax(np.abs(corr[: len(rec)])))
    window = rec[best_lag : best_lag + len(ref)]
    if len(window) < len(ref):
        return 0.0
    return float(np.dot(window, ref) / (np.linalg.norm(window) * np.linalg.norm(ref) + 1e-9))


def _tone_fraction(pcm: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    band = (freqs > hz - 15) & (freqs < hz + 15)
    return float(spectrum[band].sum() / (spectrum.sum() + 1e-9))


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
    server = start_server(CALLCENTER_CALLS_RECORD=1, CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=0)
    scenario = render_scenario("uac_pcap.xml", tmp_path, pcap=str(pcap))
    result = run_sipp(f"127.0.0.1:{server.sip_port}", tmp_path / "sipp", scenario=str(scenario),
                      extra=["-d", "4000"], timeout_s=30)
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
    assert _best_correlation(left, speech[:8000]) > 0.8
    # ...and what the server sent (the 440 Hz demo tone) on the right.
    assert _tone_fraction(right[8000:16000], 440) > 0.8
