"""In-band DTMF detection (Goertzel) against generated tones, noise and speech.

``fixtures/speech_8k.ulaw`` is 23 s of synthetic English speech (espeak-ng, two voices, resampled to
8 kHz with soxr and μ-law encoded): an IVR-like monologue including spoken digits. Real speech
would be better still; this catches the obvious talk-off failures.
"""

from pathlib import Path

import numpy as np
import pytest

from callcenter.media import g711, tones
from callcenter.media.dtmf_inband import FREQS, InbandDtmfDetector, InbandTransmitter, dtmf_tone

DIGITS = "123A456B789C*0#D"
SPEECH = Path(__file__).parent / "fixtures" / "speech_8k.ulaw"
RNG_SEED = 20240611


def detect(pcm, frame=160, **kw) -> str:
    d = InbandDtmfDetector(**kw)
    return "".join(d.feed(pcm[i: i + frame]) for i in range(0, len(pcm), frame))


def q(x) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def two_tones(digit, duration, low_db=-10.0, high_db=-10.0, detune=0.0) -> np.ndarray:
    f1, f2 = FREQS[digit]
    t = np.arange(round(duration * 8000)) / 8000
    return (tones.amplitude(low_db) * np.sin(2 * np.pi * f1 * (1 + detune) * t)
            + tones.amplitude(high_db) * np.sin(2 * np.pi * f2 * (1 + detune) * t))


def padded(*parts, gap=0.1) -> np.ndarray:
    out = [np.zeros(round(gap * 8000))]
    for p in parts:
        out += [p, np.zeros(round(gap * 8000))]
    return np.concatenate(out)


def test_every_key_is_detected_once():
    assert detect(q(padded(*(two_tones(d, 0.08) for d in DIGITS)))) == DIGITS


@pytest.mark.parametrize("detune", [-0.015, 0.015])
def test_frequency_tolerance_accepts_1_5_percent(detune):
    assert detect(q(padded(*(two_tones(d, 0.08, detune=detune) for d in DIGITS)))) == DIGITS


@pytest.mark.parametrize("detune", [-0.04, 0.04])
def test_tones_off_by_4_percent_are_not_dtmf(detune):
    assert detect(q(padded(*(two_tones(d, 0.08, detune=detune) for d in DIGITS)))) == ""


@pytest.mark.parametrize("snr_db", [20, 10, 6])
def test_detects_in_white_noise(snr_db):
    rng = np.random.default_rng(RNG_SEED + snr_db)
    signal = padded(*(two_tones(d, 0.07, -20, -20) for d in DIGITS), gap=0.08)
    signal_power = tones.amplitude(-20) ** 2  # two sines of amplitude A: A²/2 each
    noise = rng.standard_normal(len(signal)) * np.sqrt(signal_power / 10 ** (snr_db / 10))
    assert detect(q(signal + noise)) == DIGITS


def test_a_long_press_in_noise_is_one_digit():
    rng = np.random.default_rng(RNG_SEED)
    signal = padded(two_tones("5", 2.0, -20, -20))
    noise = rng.standard_normal(len(signal)) * tones.amplitude(-20) / np.sqrt(10 ** 0.6)  # 6 dB SNR
    assert detect(q(signal + noise)) == "5"


def test_the_same_key_twice_with_a_short_pause_is_two_digits():
    pause = np.zeros(round(0.05 * 8000))
    assert detect(q(padded(np.concatenate([two_tones("7", 0.06), pause, two_tones("7", 0.06)])))) == "77"


def test_minimum_duration():
    assert detect(q(padded(two_tones("9", 0.04)))) == "9"
    assert detect(q(padded(two_tones("9", 0.012)))) == ""  # a click shorter than one block


@pytest.mark.parametrize(("low_db", "high_db", "found"), [
    (-10, -16, True),  # normal twist 6 dB
    (-14, -10, True),  # reverse twist 4 dB
    (-10, -22, False),  # 12 dB: not a key
    (-20, -10, False),  # 10 dB reverse
    (-36, -36, False),  # too quiet
])
def test_twist_and_level_limits(low_db, high_db, found):
    assert detect(q(padded(two_tones("8", 0.1, low_db, high_db)))) == ("8" if found else "")


def test_frame_sizes_do_not_matter():
    pcm = q(padded(*(two_tones(d, 0.06) for d in "159#")))
    for frame in (80, 160, 240, 1000, 37):
        assert detect(pcm, frame=frame) == "159#"


def test_single_tones_ringback_and_noise_do_not_trigger():
    rng = np.random.default_rng(RNG_SEED)
    signals = [
        tones.sine(697, 1.0), tones.sine(1209, 1.0), tones.sine(1000, 1.0),
        tones.ringback(), tones.busy(),
        q(rng.standard_normal(8000 * 5) * 6000),
        tones.dual_tone(697, 1150, 1.0),  # two tones, but not a DTMF pair (1150 Hz: 4.9 % off 1209)
    ]
    for s in signals:
        assert detect(s) == ""


def test_speech_does_not_trigger():
    speech = g711.ulaw_decode(SPEECH.read_bytes())
    assert len(speech) > 8000 * 20
    for gain in (0.3, 1.0, 1.5):
        assert detect(q(speech.astype(np.float64) * gain)) == ""


def synthetic_vowels(seconds: float, seed: int) -> np.ndarray:
    """Glottal pulse trains with wandering pitch through formant resonators: voiced speech-likes."""
    rng = np.random.default_rng(seed)
    out = []
    formants = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
                (660, 1720, 2410), (640, 1190, 2390)]
    for _ in range(int(seconds / 0.25)):
        n = 2000
        f0 = rng.uniform(90, 260) * (1 + 0.1 * np.sin(np.linspace(0, 3, n)))
        phase = np.cumsum(f0 / 8000)
        pulses = np.diff(np.floor(phase), prepend=0.0)
        x = pulses * 1.0
        for fc in formants[rng.integers(len(formants))]:
            r = 0.97
            a1, a2 = -2 * r * np.cos(2 * np.pi * fc / 8000), r * r
            y = np.zeros(n)
            for i in range(n):  # a two-pole resonator
                y[i] = x[i] - a1 * (y[i - 1] if i else 0) - a2 * (y[i - 2] if i > 1 else 0)
            x = y
        x *= np.hanning(n)
        out.append(x / np.abs(x).max() * rng.uniform(3000, 20000))
    return q(np.concatenate(out))


def test_speech_like_vowels_do_not_trigger():
    assert detect(synthetic_vowels(20.0, RNG_SEED)) == ""


def test_digits_in_speech_are_still_found():
    speech = g711.ulaw_decode(SPEECH.read_bytes())[: 8000 * 6].astype(np.float64) * 0.3
    pcm = speech.copy()
    for i, d in enumerate("42"):
        start = 8000 * (1 + 2 * i)
        pcm[start: start + 800] = two_tones(d, 0.1, -8, -8)  # a press replaces the line's audio
    assert detect(q(pcm)) == "42"


def test_generated_tones_round_trip_through_g711():
    for codec in ("PCMU", "PCMA"):
        pcm = np.concatenate([np.concatenate([dtmf_tone(d, 0.06), tones.silence(0.06)]) for d in DIGITS])
        assert detect(g711.decode(g711.encode(pcm, codec), codec)) == DIGITS


def test_inband_transmitter_frames_are_detected():
    tx = InbandTransmitter("2580", payload_type=8, codec="PCMA", samples_per_packet=160, duration=800,
                           gap=480)
    frames = []
    ts = 0
    while not tx.done:
        out = tx.next(ts)
        frames.append(g711.silence("PCMA", 160) if out is None else out[3])
        if out is not None:
            assert out[0] == 8 and out[2] == ts and not out[1]
        ts += 160
    assert detect(g711.alaw_decode(b"".join(frames) + g711.silence("PCMA", 800))) == "2580"
