"""baresip 1.0.0 as a caller with real media: speech from its aufile source, DTMF from its keypad.

The caller speaks (espeak-ng speech, padded with silence: aufile ends the call when its WAV ends)
and presses 1, 2, # on its console while the server plays the 440 Hz demo tone and records the
call. Checked on what users would notice: the digits on the call record, the caller's speech on the
recording's left channel, the server's tone on its right one, and the tone in what baresip heard.

No in-band DTMF test with baresip: baresip 1.0.0 always offers telephone-event (audio_alloc adds
it unconditionally; there is no config or account setting to drop it — `audio_telev_pt` and
`dtmfmode` came in later releases), so the server always negotiates RFC 4733 with it; and baresip
has no in-band tone generator (without a negotiated telephone-event its keypad sends nothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callcenter.media import g711
from callcenter.testing.audio import Samples, best_correlation, read_wav, tone_fraction, write_pcm_wav
from callcenter.testing.baresip import Baresip
from callcenter.testing.server import StartServer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("baresip")]

SPEECH = Path(__file__).resolve().parents[1] / "media" / "fixtures" / "speech_8k.ulaw"
SPEECH_S = 4.0
HANGUP_AFTER_S = 7  # the server ends the call (demo timer); the caller's WAV lasts longer
TONE_HZ = 440  # the server's demo tone (calls.demo_tone_hz default)
DIGITS = "12#"


def _speech() -> Samples:
    return g711.decode(SPEECH.read_bytes(), "PCMU")[: int(SPEECH_S * 8000)]


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_baresip_speech_and_keypad_digits_reach_the_record_and_the_recording(
    start_server: StartServer, tmp_path: Path, codec: str
) -> None:
    server = start_server(
        CALLCENTER_CALLS_RECORD=1,
        CALLCENTER_CALLS_DEMO_HANGUP_AFTER_S=HANGUP_AFTER_S,
        CALLCENTER_IVR_NUMBERS="",
    )  # no flow on 100: the demo tone
    speech = _speech()
    work = tmp_path / "baresip"
    work.mkdir()
    mic = write_pcm_wav(
        work / "mic.wav", np.concatenate([speech, np.zeros((HANGUP_AFTER_S + 20) * 8000, np.int16)])
    )
    phone = Baresip(
        work,
        f"<sip:caller@127.0.0.1>;regint=0;answermode=manual;audio_codecs={codec}",
        commands=[f"/dial sip:100@127.0.0.1:{server.sip_port}"],
        audio_wav=mic,
        record_dir=work / "heard",
    )
    try:
        phone.start()
        assert phone.wait_for_output("Call established") == "Call established", phone.output()
        phone.press(DIGITS)
        # The server hangs up after demo_hangup_after_s; baresip reports the end of the call.
        ended = phone.wait_for_output("terminated (duration", timeout=HANGUP_AFTER_S + 15)
        assert ended is not None, phone.output()[-3000:]
    finally:
        phone.stop()

    (call,) = server.new_calls(set(), 1)
    assert (call["disposition"], call["hangup_by"]) == ("answered", "server"), call
    assert call["rtp"]["codec"] == codec, call
    # Each key once, although every RFC 4733 event ends with three end packets.
    assert call.get("dtmf") == DIGITS, call

    server.stop()  # the recording is finalised by the time the server has exited
    rate, frames = read_wav(Path(call["recording"]))
    assert (rate, frames.shape[1]) == (8000, 2)
    left, right = frames[:, 0], frames[:, 1]
    assert len(left) >= SPEECH_S * 8000
    # The caller's speech on the left (G.711 on the way: compare by correlation, not samples)...
    assert best_correlation(left, speech) > 0.8
    # ...and the server's tone on the right.
    assert tone_fraction(right, TONE_HZ) > 0.8

    # What baresip heard (sndfile's decode dump) is the tone as well.
    (heard_path,) = phone.recordings("dec")
    heard_rate, heard = read_wav(heard_path)
    assert heard_rate == 8000 and len(heard) >= 8000
    assert tone_fraction(heard[:, 0], TONE_HZ) > 0.8
